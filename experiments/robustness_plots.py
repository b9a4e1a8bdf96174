"""Figures and the printed table of the robustness study (``clinfuse robustness``).

Each function reads the tidy results of :func:`clinfuse.experiments.robustness.run_study`
(columns ``head, trained_on, kind, condition, draw, metric, value, oracle, n_patients, n_with_data``;
results without ``draw`` count as one draw). Conditions drawn several times (``--draws``) are shown
as the mean and the standard deviation over their draws.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def model_label(head: str, trained_on: str) -> str:
    """``transformer`` for a model trained on the cohort, ``transformer [mnar_shift]`` otherwise."""
    return head if trained_on == "cohort" else f"{head} [{trained_on}]"


def _labelled(results: pd.DataFrame) -> pd.DataFrame:
    out = results.copy()
    out["model"] = [model_label(h, t) for h, t in zip(out["head"], out["trained_on"])]
    return out


def _ordered(values: pd.Series) -> list:
    return list(dict.fromkeys(values))  # first-appearance order (pandas pivots would sort)


def over_draws(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (head, trained_on, kind, condition): ``value``/``oracle``/``n_with_data`` are the
    means over the condition's draws, ``value_sd``/``oracle_sd`` the standard deviations (ddof 1;
    NaN for a single draw) and ``draws`` their number. First-appearance order is kept."""
    keys = ["head", "trained_on", "kind", "condition"]
    g = results.groupby(keys, sort=False)
    out = g[["value", "oracle", "n_with_data"]].mean()
    out["value_sd"], out["oracle_sd"] = g["value"].std(), g["oracle"].std()
    out["draws"] = g.size()
    rest = results.drop_duplicates(keys).set_index(keys)[["metric", "n_patients"]]
    return out.join(rest).reset_index()


def plot_subset_heatmap(results: pd.DataFrame, path: Path) -> Path:
    """Heatmap of the metric per modality subset (rows) x head (columns), cohort-trained models."""
    r = results[(results["kind"] == "subset") & (results["trained_on"] == "cohort")]
    heads, subsets = _ordered(r["head"]), _ordered(r["condition"])
    grid = r.pivot(index="condition", columns="head", values="value").loc[subsets, heads].to_numpy(float)
    fig, ax = plt.subplots(figsize=(3.2 + 1.3 * len(heads), 1.4 + 0.28 * len(subsets)))
    # a diverging scale centred on chance (0.5 for C-index and AUROC): below-chance cells stand out
    spread = max(0.05, float(np.nanmax(np.abs(grid - 0.5)))) if np.isfinite(grid).any() else 0.5
    im = ax.imshow(grid, aspect="auto", cmap="RdBu", vmin=0.5 - spread, vmax=0.5 + spread)
    ax.set_xticks(range(len(heads)), heads, rotation=30, ha="right")
    ax.set_yticks(range(len(subsets)), subsets, fontsize=7)
    if grid.size <= 400:
        for (i, j), v in np.ndenumerate(grid):
            colour = "w" if not math.isnan(v) and abs(v - 0.5) > 0.6 * spread else "k"  # dark ends: white text
            ax.text(j, i, "nan" if math.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=6, color=colour)
    fig.colorbar(im, ax=ax, label=f"{r['metric'].iloc[0]} (white = 0.5, chance)")
    ax.set_title("test metric with only these modalities")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_mcar_lines(results: pd.DataFrame, path: Path) -> Path:
    """Metric vs MCAR missing rate, one line per head; the oracle dashed where known."""
    r = over_draws(results[(results["kind"] == "mcar") & (results["trained_on"] == "cohort")])
    r["rate"] = r["condition"].astype(float)
    draws = int(r["draws"].max()) if len(r) else 1
    fig, ax = plt.subplots(figsize=(6, 4))
    heads = _ordered(r["head"])
    span = float(r["rate"].max() - r["rate"].min()) if len(r) else 0.0
    for k, head in enumerate(heads):
        h = r[r["head"] == head].sort_values("rate")
        dodge = (k - (len(heads) - 1) / 2) * 0.012 * span if draws > 1 else 0.0  # error bars side by side
        ax.errorbar(h["rate"] + dodge, h["value"], yerr=h["value_sd"].fillna(0) if draws > 1 else None, marker="o",
                    capsize=3, label=head)
    o = r.drop_duplicates("rate").sort_values("rate")
    if o["oracle"].notna().any():
        ax.errorbar(o["rate"], o["oracle"], yerr=o["oracle_sd"].fillna(0) if draws > 1 else None, fmt="k--",
                    marker="x", capsize=3, label="oracle")
    xlabel = "test-time MCAR missing rate per modality"
    ax.set_xlabel(xlabel if draws == 1 else f"{xlabel}\n(mean and sd over {draws} random draws per rate)")
    ax.set_ylabel(r["metric"].iloc[0] if len(r) else "metric")
    ax.set_title("robustness to random test-time missingness")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def oracle_gaps(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ``oracle - value`` per model (rows) and group (columns: ``all modalities``, ``smaller
    subsets`` (mean), ``mcar`` (mean over rates), ``mar``, ``mnar``), where the oracle is known; a
    condition drawn several times counts once, with its mean over draws."""
    r = _labelled(over_draws(results))
    full = r.loc[r["kind"] == "subset", "condition"].map(lambda c: c.count("+")).max()
    is_full = (r["kind"] == "subset") & (r["condition"].str.count(r"\+") == full)
    group = r["kind"].where(r["kind"] != "subset", "smaller subsets").where(~is_full, "all modalities")
    r = r.assign(group=group, gap=r["oracle"] - r["value"]).dropna(subset=["gap"])
    order = [g for g in ("all modalities", "smaller subsets", "mcar", "mar", "mnar") if g in set(r["group"])]
    return r.groupby(["model", "group"], sort=False)["gap"].mean().unstack("group").reindex(columns=order)


def plot_oracle_gap(results: pd.DataFrame, path: Path) -> Path:
    """Grouped bars: gap to the oracle per model (x) and evaluation kind (bar colour)."""
    gaps = oracle_gaps(results)
    fig, ax = plt.subplots(figsize=(3.5 + 1.4 * max(len(gaps), 1), 4))
    if gaps.empty:
        ax.text(0.5, 0.5, "the cohort has no oracle", ha="center", va="center", transform=ax.transAxes)
    else:
        width = 0.8 / len(gaps.columns)
        for k, kind in enumerate(gaps.columns):
            ax.bar(np.arange(len(gaps)) + (k - (len(gaps.columns) - 1) / 2) * width, gaps[kind], width, label=kind)
        ax.set_xticks(range(len(gaps)), gaps.index, rotation=30, ha="right")
        ax.axhline(0, color="k", lw=0.8)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)  # beside the bars
    ax.set_ylabel(f"oracle - model ({results['metric'].iloc[0]})")
    ax.set_title("gap to the oracle (lower is better; mcar: mean over rates)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(results: pd.DataFrame, out: Path) -> list[Path]:
    """Write the three PNGs into ``out`` and return their paths."""
    out = Path(out)
    return [
        plot_subset_heatmap(results, out / "subset_heatmap.png"),
        plot_mcar_lines(results, out / "mcar_lines.png"),
        plot_oracle_gap(results, out / "oracle_gap.png"),
    ]


def markdown_table(results: pd.DataFrame) -> str:
    """A markdown table: one row per evaluation, one column per model, then the oracle."""
    r = _labelled(over_draws(results))
    r["evaluation"] = r["kind"] + ": " + r["condition"]
    models, evals = _ordered(r["model"]), _ordered(r["evaluation"])
    cell = r.assign(text=[_mean_sd(v, sd) for v, sd in zip(r["value"], r["value_sd"])])
    values = cell.pivot(index="evaluation", columns="model", values="text").reindex(index=evals, columns=models)
    first = r.drop_duplicates("evaluation").set_index("evaluation").reindex(evals)
    draws = int(r["draws"].max())
    head = ["evaluation", *models, "oracle", "n with data"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in evals:
        o = first.loc[e]
        cells = [e, *(values.at[e, m] if isinstance(values.at[e, m], str) else "" for m in models),
                 _mean_sd(o["oracle"], o["oracle_sd"]), f"{o['n_with_data']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    title = f"\n{results['metric'].iloc[0]} on the test split ({int(results['n_patients'].iloc[0])} patients)"
    if draws > 1:
        title += f"; random removals: mean ± sd over {draws} draws"
    return "\n".join([title, *lines, ""])


def _mean_sd(value: float, sd: float) -> str:
    """``0.712`` (one draw), ``0.712 ± 0.004`` (several), empty for NaN."""
    if value is None or math.isnan(value):
        return ""
    return f"{value:.3f}" if sd is None or math.isnan(sd) else f"{value:.3f} ± {sd:.3f}"
