"""Whole-slide-image modality: patch-feature bags, CLAM ``.h5`` or torch ``.pt`` per slide (read lazily)."""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from clinfuse.datasets.padding import pad_stack, pick, present_mask
from clinfuse.datasets.reader import ModalityReader, check_known_ids, read_cohort_info, read_table


def read_slide_features(path: str | Path, feature_dim: int | None = None, where: str = "") -> np.ndarray:
    """The patch features of one slide file, validated: CLAM ``.h5`` or a torch ``.pt`` tensor.

    ``.h5`` files hold a ``features`` dataset (CLAM's ``h5_files``); ``.pt``/``.pth`` files hold
    one 2-D floating-point tensor (CLAM's ``pt_files``, as MCAT/PORPOISE/SurvPath read them),
    loaded with ``torch.load(weights_only=True)`` so no pickled code runs.

    Args:
        path: the ``.h5`` or ``.pt``/``.pth`` file.
        feature_dim: the expected feature width ``F`` (None: any).
        where: context for error messages (e.g. the patient).

    Raises:
        ValueError: naming the file (and ``where``) for an unreadable or corrupt file, a missing
            ``features`` dataset, a ``.pt`` file that is not one floating-point tensor, a wrong
            shape, an empty bag or NaN/inf values.

    Shapes:
        returns ``(P, F)`` float32.
    """
    if Path(path).suffix.lower() in (".pt", ".pth"):
        feats = _read_torch_features(path, where)
    else:
        try:
            feats = np.asarray(_read_h5_features(path), dtype=np.float32)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} {where}: {_unreadable(path)}: {err}") from err
    return check_bag(feats, feature_dim, f"{path} {where}")


def _unreadable(path: str | Path) -> str:
    """Why a slide file could not be read: missing (with the absolute path a relative one was
    resolved to) or corrupt."""
    if not Path(path).is_file():
        return (f"no such slide file (looked for {Path(path).resolve()}; a relative path is resolved against "
                "the working directory)")
    return "corrupt or unreadable slide file"


def eval_subset(bag: np.ndarray, max_patches: int) -> np.ndarray:
    """The fixed patch subset evaluation reads from a bag of more than ``max_patches`` patches: a
    random subset (in the bag's order) seeded by the bag itself (its length and 64 evenly spaced
    rows), so the same slides give the same subset whatever the patient id (a pseudonymised
    or re-keyed patient gets the same prediction). Smaller bags are returned whole.

    Shapes:
        bag: ``(P, F)`` -> ``(min(P, max_patches), F)``
    """
    if len(bag) <= max_patches:
        return bag
    fingerprint = np.ascontiguousarray(bag[:: max(1, len(bag) // 64)]).tobytes()
    rng = np.random.default_rng((zlib.crc32(fingerprint), len(bag)))
    return bag[np.sort(rng.choice(len(bag), size=max_patches, replace=False))]


def patches_read(slides: Sequence[np.ndarray], max_patches: int) -> np.ndarray:
    """The patches evaluation reads from one patient's slides: their float32 concatenation (in the
    given order) cut to :func:`eval_subset`. The prognosis API reads a patient's slides with it,
    and :func:`clinfuse.experiments.wire.encode_slides` sends what it returns, so both choose alike.

    Shapes:
        slides: ``(P_k, F)`` each -> ``(min(sum P_k, max_patches), F)`` float32
    """
    bags = [np.asarray(s, dtype=np.float32) for s in slides]
    # one slide: no concatenated copy (the subset is gathered from it, a small bag is used as is)
    return eval_subset(bags[0] if len(bags) == 1 else np.concatenate(bags, axis=0), max_patches)


def check_bag(feats: np.ndarray, feature_dim: int | None, label: str) -> np.ndarray:
    """``feats`` if it is a non-empty ``(P, F)`` bag of finite values with ``F = feature_dim`` (None:
    any); otherwise ValueError starting with ``label`` (the file, or the record field)."""
    wrong_width = feature_dim is not None and feats.ndim == 2 and feats.shape[1] != feature_dim
    if feats.ndim != 2 or feats.shape[0] == 0 or wrong_width:
        raise ValueError(f"{label}: features must be (P>0, {feature_dim or 'F'}), got {feats.shape}")
    if not np.isfinite(feats).all():
        raise ValueError(f"{label}: features contain NaN/inf")
    return feats


def _read_h5_features(path: str | Path) -> np.ndarray:
    """The ``features`` dataset of an ``.h5`` file, in its stored dtype.

    h5py's low-level API, not ``h5py.File``: the high-level object's setup and teardown (property
    lists, object tracking) cost about twice the read itself for a bag of a few hundred patches,
    and the prognosis API reads one file per patient per call.
    """
    fid = h5py.h5f.open(str(path).encode(), h5py.h5f.ACC_RDONLY)
    try:
        if b"features" not in fid:
            raise ValueError("no 'features' dataset")
        dset = h5py.h5d.open(fid, b"features")
        try:
            out = np.empty(dset.shape, dtype=dset.dtype)
            dset.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
        finally:
            dset.close()
    finally:
        fid.close()
    return out


def _read_torch_features(path: str | Path, where: str) -> np.ndarray:
    """One ``.pt`` tensor as float32 numpy (shape checked by the caller)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types (RuntimeError, UnpicklingError...): name the file
        raise ValueError(f"{path} {where}: {_unreadable(path)}: {err}") from err
    if not isinstance(obj, torch.Tensor):
        raise ValueError(f"{path} {where}: a .pt slide file must hold one tensor, got {type(obj).__name__}")
    if not obj.is_floating_point():
        raise ValueError(f"{path} {where}: features must be floating point, got {obj.dtype}")
    return obj.detach().to(torch.float32).numpy()


def _slide_width(path: Path, patient_id: str) -> int:
    """The feature width ``F`` of one slide file; for ``.h5`` from the dataset's shape alone."""
    if path.suffix.lower() == ".h5":
        try:
            with h5py.File(path, "r") as f:
                shape = f["features"].shape
            if len(shape) == 2:
                return int(shape[1])
        except (OSError, KeyError, TypeError, AttributeError):
            pass  # read_slide_features names the problem
    return int(read_slide_features(path, None, f"(patient {patient_id})").shape[1])


#: training patients whose bags give the feature statistics of the fitted state
STAT_BAGS = 32


class WSIReader(ModalityReader):
    """Keeps only slide paths; ``get`` opens a patient's slides and samples patches.

    A patient's bag is the concatenation of the features of all their slides (in ``slides.csv``
    order; each a CLAM ``.h5`` or a torch ``.pt``, see ``read_slide_features``). At most
    ``max_patches`` patches are returned: a uniform random subset in
    training mode (drawn from torch's RNG, so ``seed_everything`` and per-worker seeding apply), and
    in eval mode a fixed subset seeded by the bag's content (:func:`eval_subset`: the same patches
    every epoch, and for the same slides under another patient id). Subsets
    keep the bag's patch order. Features are not normalised (they are pre-extracted embeddings).

    Args:
        root: the cohort folder.
        known_ids: patient ids of ``labels.parquet`` (``None`` skips the check).
        max_patches: the cap on patches per patient.

    Raises:
        ValueError: a missing column, unknown patients, a slide listed twice (same patient and
            slide_id, or same path), a slide path that does not exist (at construction), or a corrupt slide (in ``get``: unreadable file, no ``features``
            dataset, wrong feature width, NaN/inf), naming the file and the patient.
    """

    name = "wsi"
    filename = "wsi/slides.csv"

    def __init__(
        self, root: str | Path, known_ids: Iterable[str] | None = None, max_patches: int = 512
    ) -> None:
        super().__init__(root, known_ids)
        if max_patches < 1:
            raise ValueError(f"max_patches must be >= 1, got {max_patches}")
        self.max_patches = int(max_patches)
        df = read_table(self.path, ["patient_id", "slide_id", "path"], str_columns=["slide_id", "path"])
        check_known_ids(df["patient_id"], self.known_ids, self.path)
        if df["path"].isna().any():
            who = df.loc[df["path"].isna(), "patient_id"].unique()[:10].tolist()
            raise ValueError(f"{self.path}: column 'path' is null for patient(s) {who}")
        for cols, what in ((["patient_id", "slide_id"], "slide_id"), (["path"], "path")):
            dup = df.duplicated(cols, keep=False)
            if dup.any():
                first = df[dup].iloc[0]
                same = df[(df[cols] == first[cols]).all(axis=1)]
                raise ValueError(
                    f"{self.path}: {what} {first[what]!r} is listed {len(same)} times (patient(s) "
                    f"{sorted(same['patient_id'].unique())}); list each slide once, or its patches count twice"
                )
        self._slides: dict[str, list[Path]] = {}
        for pid, rel in zip(df["patient_id"], df["path"]):
            full = self.root / "wsi" / rel
            if not full.is_file():
                raise ValueError(f"{self.path}: slide file {full} of patient {pid} does not exist")
            self._slides.setdefault(pid, []).append(full)
        self._index = {pid: i for i, pid in enumerate(self._slides)}

    def _read_bag(self, patient_id: str, feature_dim: int | None = None) -> np.ndarray:
        """All of a patient's patch features, concatenated. Shapes: returns ``(P, F)`` float32."""
        where = f"(patient {patient_id})"
        bags = [read_slide_features(path, feature_dim, where) for path in self._slides[patient_id]]
        return np.concatenate(bags, axis=0)

    def config(self) -> dict[str, Any]:
        return {"max_patches": self.max_patches}

    def _fit(self, train_ids: list[str]) -> dict[str, Any]:
        """The feature width (``cohort.json``'s ``wsi.feature_dim``, else the width most of the
        sampled training slides have) and the feature statistics; a sampled slide of another
        width fails here, naming its file and patient."""
        ids = train_ids[:: max(1, len(train_ids) // STAT_BAGS)][:STAT_BAGS]
        dim = None
        info = self.root / "cohort.json"
        if info.exists():
            dim = read_cohort_info(info).get("wsi", {}).get("feature_dim")
        if dim is None:
            widths = Counter(_slide_width(path, pid) for pid in ids for path in self._slides[pid])
            dim = widths.most_common(1)[0][0]
        return {"feature_dim": int(dim), **self._feature_stats(ids, int(dim))}

    def _feature_stats(self, ids: list[str], dim: int) -> dict[str, list[float]]:
        """Per-dimension mean and sd of the patch features of the given training patients (all
        their patches, one bag in memory at a time): what the prognosis API compares a new bag
        with, to flag features from another extractor."""
        total, square, count = np.zeros(dim), np.zeros(dim), 0
        for pid in ids:
            bag = self._read_bag(pid, dim).astype(np.float64)
            total += bag.sum(0)
            square += (bag**2).sum(0)
            count += len(bag)
        mean = total / count
        std = np.sqrt(np.maximum(square / count - mean**2, 0.0))
        return {"feature_mean": mean.tolist(), "feature_std": np.where(std > 0, std, 1.0).tolist()}

    def _apply(self) -> None:
        pass  # nothing to precompute: bags are read lazily

    def _spec(self) -> dict[str, Any]:
        return {"feature_dim": int(self._state["feature_dim"])}

    def _get(self, patient_id: str, training: bool) -> dict[str, np.ndarray]:
        bag = self._read_bag(patient_id, self._state["feature_dim"])
        if len(bag) > self.max_patches and training:  # a fresh random subset at every read
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item()))
            bag = bag[np.sort(rng.choice(len(bag), size=self.max_patches, replace=False))]
        return {"features": eval_subset(bag, self.max_patches)}

    def collate(self, items: Sequence[dict[str, np.ndarray] | None]) -> dict[str, torch.Tensor]:
        """Pad bags to the largest in the batch.

        Shapes:
            features ``(B, P, F)`` float, mask ``(B, P)`` bool, present ``(B,)`` bool.
        """
        dim = int(self._state["feature_dim"])
        mask = [None if it is None else np.ones(len(it["features"]), dtype=bool) for it in items]
        return {
            "features": pad_stack(pick(items, "features"), (None, dim), np.float32, "wsi.features"),
            "mask": pad_stack(mask, (None,), np.bool_, "wsi.mask"),
            "present": present_mask(items),
        }
