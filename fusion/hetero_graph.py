"""Heterogeneous graph fusion with learned prompt nodes for missing modalities (after GTP-4o).

One batched heterogeneous graph holds every patient of the batch; a node of patient ``b`` only ever
connects to nodes of patient ``b``. Node types:

- ``m`` for each modality: the patient's real tokens of ``m``, or, when the patient lacks ``m``
  (absent or omitted), ``n_prompts`` learned prompt nodes conditioned on the patient's other
  modalities, so every patient's graph has every modality;
- ``hub``: one summary node per (patient, modality), row ``b * M + j`` for modality ``j``; it
  starts as the mean of the patient's ``m`` nodes plus a learned modality embedding;
- ``patient``: one node per patient, read out last.

Edge types (relations): ``(m, "pool", hub)`` and ``(hub, "broadcast", m)`` within a modality (O(N)
per modality), ``(hub, "cross", hub)`` between the hubs of different modalities of one patient, and
``(m, "readout", patient)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from clinfuse.encoders.base import ModalityTokens
from clinfuse.fusion.base import FusionHead, FusionOutput

HUB, PATIENT = "hub", "patient"
EdgeType = tuple[str, str, str]


@dataclass
class _Graph:
    x: dict[str, torch.Tensor]  # node type -> (nodes, D)
    edges: dict[EdgeType, torch.Tensor]  # edge type -> (2, edges) long
    batch: dict[str, torch.Tensor]  # node type -> (nodes,) patient index
    real: dict[str, torch.Tensor]  # modality -> (B, N) bool: which padded tokens are the first nodes
    means: torch.Tensor  # (B, M, D) masked token means of the inputs (zero where absent)
    present: torch.Tensor  # (B, M) bool
    completion: torch.Tensor  # (B, M, D) prompt completion of every (patient, modality)


class HeteroGraphFusion(FusionHead):
    """Message passing on a batched heterogeneous patient graph; prompts stand in for missing data.

    Missing-modality completion: patient ``b`` lacking modality ``m`` gets the nodes
    ``prompts[m] + g_m(c)`` where ``prompts[m]`` is a learned ``(P, D)`` parameter, ``c`` is the
    mean of the masked token means of ``b``'s present modalities (a learned ``empty_context``
    vector when ``b`` has none) and ``g_m`` a small MLP (shared hidden layer, per-modality output).
    Omitting ``m`` and passing it with ``present=False`` therefore build the same graph.

    Aggregation runs in two phases. Phase 1, ``n_layers`` times, along modality meta-paths: each
    hub gathers its modality's nodes (``pool``, a mean-aggregating ``SAGEConv`` per modality) and
    the other modalities' hubs of the same patient (``cross``, multi-head ``TransformerConv``
    attention), then every node gathers its updated hub (``broadcast``, a ``SAGEConv`` per
    modality). ``HeteroConv`` sums the relations into one node type; every node type has its own
    residual + LayerNorm. Phase 2 reads each modality into the patient node (``readout``, one
    ``SAGEConv`` relation per modality, mean over the modality's nodes) and combines the relations
    with a per-patient attention over relation types; ``pooled`` is the LayerNormed result.
    Token ``times`` are not used.

    Outputs:
        - ``pooled``: the patient node's embedding.
        - ``per_modality[m]``: the mean of ``m``'s real-token node embeddings after phase 1; zero for
          patients without real data for ``m`` (prompt nodes are never reported as data).
        - ``aux_loss``: ``completion_weight`` times the completion loss: for every (patient,
          modality) the patient HAS, the prompt completion built from the patient's other
          modalities (mean of ``prompts[m] + g_m(c)`` over the ``P`` prompts) against the detached
          masked token mean, squared error averaged over ``D`` and over those pairs. It is computed
          in train and eval mode alike (a validation metric too), is a 0-dim zero tensor when no
          patient has any modality, and None when ``completion_weight`` is 0.

    Args:
        d_model: width ``D`` of tokens and output.
        modalities: the modality names this head accepts (not ``"hub"`` or ``"patient"``).
        n_layers: phase-1 layers (each: pool + cross into the hubs, then broadcast to the nodes).
        n_prompts: prompt nodes ``P`` that stand in for a missing modality.
        completion_weight: weight of the completion loss returned as ``aux_loss``.
        dropout: dropout on every message-passing update before the residual.
        n_heads: attention heads of the cross-modal relation (must divide ``d_model``).
    """

    def __init__(
        self,
        d_model: int,
        modalities: Sequence[str],
        n_layers: int = 2,
        n_prompts: int = 1,
        completion_weight: float = 0.1,
        dropout: float = 0.1,
        n_heads: int = 4,
    ) -> None:
        # imported here, not at module level: importing PyG takes seconds and every
        # `import clinfuse.fusion` would pay for it
        from torch_geometric.nn import HeteroConv, SAGEConv, TransformerConv
        from torch_geometric.nn.module_dict import ModuleDict  # accepts "." in modality names

        super().__init__(d_model, modalities)
        if n_layers < 1:
            raise ValueError(f"HeteroGraphFusion: n_layers must be >= 1, got {n_layers}")
        if n_prompts < 1:
            raise ValueError(f"HeteroGraphFusion: n_prompts must be >= 1, got {n_prompts}")
        if completion_weight < 0:
            raise ValueError(f"HeteroGraphFusion: completion_weight must be >= 0, got {completion_weight}")
        if d_model % n_heads != 0:
            raise ValueError(f"HeteroGraphFusion: n_heads={n_heads} must divide d_model={d_model}")
        bad = [m for m in self.modalities if m in (HUB, PATIENT) or "___" in m]
        if bad:
            raise ValueError(f"HeteroGraphFusion: reserved modality names {bad} ('hub', 'patient', '___')")
        self.n_layers, self.n_prompts, self.n_heads = n_layers, n_prompts, n_heads
        self.completion_weight = completion_weight
        d, n_mod = d_model, len(self.modalities)
        # prompt completion: prompts[m] + g_m(context)
        self.prompts = nn.Parameter(torch.randn(n_mod, n_prompts, d) * 0.02)
        self.empty_context = nn.Parameter(torch.randn(d) * 0.02)
        self.context_mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU())
        self.context_out = nn.Parameter(torch.randn(n_mod, d, d) / d**0.5)
        self.context_bias = nn.Parameter(torch.zeros(n_mod, d))
        self.hub_embedding = nn.Parameter(torch.randn(n_mod, d) * 0.02)
        # phase 1: one HeteroConv per layer holding every within/cross relation
        self.layers, self.norms = nn.ModuleList(), nn.ModuleList()
        for _ in range(n_layers):
            convs: dict[EdgeType, nn.Module] = {}
            for m in self.modalities:
                # no bias: a hub receives from every pool relation, only its own modality has edges
                convs[(m, "pool", HUB)] = SAGEConv(d, d, root_weight=False, bias=False)
                convs[(HUB, "broadcast", m)] = SAGEConv(d, d, root_weight=False)
            if n_mod > 1:
                convs[(HUB, "cross", HUB)] = TransformerConv(d, d // n_heads, heads=n_heads)
            self.layers.append(HeteroConv(convs, aggr="sum"))
            self.norms.append(ModuleDict({t: nn.LayerNorm(d) for t in (*self.modalities, HUB)}))
        # phase 2: modality -> patient relations, stacked (aggr=None) for the relation attention
        with warnings.catch_warnings():  # modality nodes are deliberately never a destination here
            warnings.simplefilter("ignore", UserWarning)
            self.readout = HeteroConv(
                {(m, "readout", PATIENT): SAGEConv(d, d, root_weight=False) for m in self.modalities}, aggr=None
            )
        self.relation_score = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))
        self.out_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)

    # ------------------------------------------------------------------ graph
    def complete(self, means: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """The conditioning ``g_m(c)`` of every (patient, modality), ``c`` from the OTHER modalities.

        For a modality the patient lacks, "other" modalities are all its present ones; for one it
        has, the same mean leaves that modality out (what the prompt would see if it were missing).

        Shapes:
            - means: ``(B, M, D)`` (zero where absent), present: ``(B, M)`` bool
            - returns: ``(B, M, D)``
        """
        p = present.to(means.dtype)[..., None]  # (B, M, 1)
        others = (means * p).sum(1, keepdim=True) - means * p  # (B, M, D)
        count = p.sum(1, keepdim=True) - p  # (B, M, 1)
        context = torch.where(count > 0, others / count.clamp(min=1), self.empty_context)  # (B, M, D)
        hidden = self.context_mlp(context)  # (B, M, D)
        return torch.einsum("bmd,mde->bme", hidden, self.context_out) + self.context_bias  # (B, M, D)

    def _graph(self, inputs: Mapping[str, ModalityTokens]) -> _Graph:
        means, present = self.modality_means(inputs)  # (B, M, D), (B, M); validates inputs
        (b, n_mod, d), p = means.shape, self.n_prompts
        completion = self.complete(means, present)  # (B, M, D)
        prompts = self.prompts[None] + completion[:, :, None]  # (B, M, P, D)
        patients = torch.arange(b, device=means.device)
        x, edges, batch, real = {}, {}, {}, {}
        for j, m in enumerate(self.modalities):
            toks = inputs.get(m)
            if toks is None:
                real[m] = torch.zeros(b, 0, dtype=torch.bool, device=means.device)
                rows, feats = patients[:0], means.new_zeros(0, d)
            else:
                real[m] = toks.mask & toks.present[:, None]  # (B, N)
                rows = real[m].nonzero(as_tuple=True)[0]  # (K_real,) patient of each real token
                feats = toks.tokens[real[m]]  # (K_real, D); padding content is never read
            missing = (~present[:, j]).nonzero(as_tuple=True)[0]  # (K_missing,)
            x[m] = torch.cat([feats, prompts[missing, j].reshape(-1, d)])  # (K_real + K_missing * P, D)
            batch[m] = torch.cat([rows, missing.repeat_interleave(p)])  # (K_m,)
            nodes = torch.arange(batch[m].numel(), device=means.device)
            hubs = batch[m] * n_mod + j  # (K_m,) the hub of each node
            edges[(m, "pool", HUB)] = torch.stack([nodes, hubs])
            edges[(HUB, "broadcast", m)] = torch.stack([hubs, nodes])
            edges[(m, "readout", PATIENT)] = torch.stack([nodes, batch[m]])
        hub0 = torch.where(present[..., None], means, prompts.mean(2)) + self.hub_embedding  # (B, M, D)
        x[HUB] = hub0.reshape(b * n_mod, d)  # (B * M, D), row b * M + j
        batch[HUB] = patients.repeat_interleave(n_mod)
        if n_mod > 1:
            pairs = (~torch.eye(n_mod, dtype=torch.bool, device=means.device)).nonzero()  # (M(M-1), 2)
            base = (patients * n_mod)[:, None]  # (B, 1)
            src, dst = (base + pairs[:, 0]).flatten(), (base + pairs[:, 1]).flatten()  # (B * M(M-1),)
            edges[(HUB, "cross", HUB)] = torch.stack([src, dst])
        x[PATIENT] = means.new_zeros(b, d)  # a placeholder: the readout relations ignore it (root_weight=False)
        batch[PATIENT] = patients
        return _Graph(x, edges, batch, real, means, present, completion)

    def build_graph(
        self, inputs: Mapping[str, ModalityTokens]
    ) -> tuple[dict[str, torch.Tensor], dict[EdgeType, torch.Tensor], dict[str, torch.Tensor]]:
        """The batched heterogeneous graph before message passing.

        Returns:
            ``x_dict`` (node type -> node features), ``edge_index_dict`` (edge type -> ``(2, E)``
            source/destination rows of the source/destination node types) and ``batch_dict``
            (node type -> the patient index of each node).
        """
        g = self._graph(inputs)
        return g.x, g.edges, g.batch

    # ------------------------------------------------------------------ forward
    def _update(
        self, x: dict[str, torch.Tensor], out: dict[str, torch.Tensor], norms: nn.ModuleDict
    ) -> dict[str, torch.Tensor]:
        """Residual + per-type LayerNorm for the node types that received messages."""
        x = dict(x)
        for t, h in out.items():
            x[t] = norms[t](x[t] + self.dropout(nn.functional.gelu(h)))  # (nodes, D)
        return x

    def forward(self, inputs: Mapping[str, ModalityTokens]) -> FusionOutput:
        """Fuse by two-phase heterogeneous message passing.

        Args:
            inputs: modality -> tokens; absent modalities may be omitted or have ``present=False``.

        Returns:
            ``pooled``, ``per_modality`` (one entry per modality of the head) and ``aux_loss``.

        Shapes:
            - inputs[m].tokens: ``(B, N_m, D)``, inputs[m].mask: ``(B, N_m)``
            - pooled and every per_modality value: ``(B, D)``; aux_loss: ``()``
        """
        g = self._graph(inputs)
        to_hubs = {k: e for k, e in g.edges.items() if k[1] in ("pool", "cross")}
        to_nodes = {k: e for k, e in g.edges.items() if k[1] == "broadcast"}
        x = g.x
        for conv, norms in zip(self.layers, self.norms):
            x = self._update(x, conv(x, to_hubs), norms)  # hubs: own nodes + other modalities' hubs
            x = self._update(x, conv(x, to_nodes), norms)  # nodes: their updated hub
        readout = {k: e for k, e in g.edges.items() if k[1] == "readout"}
        relations = self.readout(x, readout)[PATIENT]  # (B, M, D) in canonical modality order
        weights = torch.softmax(self.relation_score(relations).squeeze(-1), dim=1)  # (B, M)
        pooled = self.out_norm((weights[..., None] * relations).sum(1))  # (B, D)

        per_modality = {}
        for m in self.modalities:
            real = g.real[m]  # (B, N); its True positions are the first nodes of type m, in order
            h = x[m].new_zeros(*real.shape, self.d_model)  # (B, N, D)
            h[real] = x[m][: int(real.sum())]
            per_modality[m] = h.sum(1) / real.sum(1, keepdim=True).clamp(min=1).to(h.dtype)  # (B, D)
        return FusionOutput(pooled=pooled, per_modality=per_modality, aux_loss=self._completion_loss(g))

    def _completion_loss(self, g: _Graph) -> torch.Tensor | None:
        """``completion_weight`` x mean squared error of the completions of the modalities present."""
        if self.completion_weight == 0:
            return None
        guess = self.prompts.mean(1) + g.completion  # (B, M, D)
        err = (guess - g.means.detach()).pow(2).mean(-1)  # (B, M)
        err = torch.where(g.present, err, torch.zeros_like(err))  # (B, M)
        return self.completion_weight * err.sum() / g.present.sum().clamp(min=1)
