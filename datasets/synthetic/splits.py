"""Random train/val/test split by patient, stratified on the (event, binary) label pair."""

import numpy as np

SPLITS = ("train", "val", "test")


def validate_fractions(split_fractions) -> tuple[float, float, float]:
    """Check ``(train, val, test)`` fractions: three numbers >= 0 summing to 1, train > 0.

    Raises:
        ValueError: Naming ``split_fractions`` and the bad value.
    """
    try:
        fractions = tuple(float(f) for f in split_fractions)
    except (TypeError, ValueError):
        raise ValueError(f"split_fractions must be three numbers (train, val, test), got {split_fractions!r}") from None
    if len(fractions) != 3 or min(fractions) < 0 or fractions[0] <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(
            f"split_fractions must be three numbers >= 0 (train > 0) summing to 1, got {split_fractions!r}"
        )
    return fractions


def stratified_split(strata: np.ndarray, fractions, rng: np.random.Generator) -> np.ndarray:
    """Assign every patient to a split, with the split fractions holding within every stratum.

    Args:
        strata: Integer stratum per patient, shape ``(n,)``.
        fractions: ``(train, val, test)`` fractions summing to 1.
        rng: Source of randomness (the generator's "splits" stream).

    Returns:
        Object array of ``"train" | "val" | "test"``, shape ``(n,)``.
    """
    n = strata.shape[0]
    order = np.lexsort((rng.uniform(size=n), strata))  # random order within each stratum
    sorted_strata = strata[order]
    starts = np.flatnonzero(np.r_[True, sorted_strata[1:] != sorted_strata[:-1]])
    sizes = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, sizes)
    # Position of each patient inside its stratum, in (0, 1); a random offset per stratum spreads
    # the rounding so small strata do not all put their odd patient into train.
    offset = rng.uniform(size=sizes.size)
    position = ((rank + np.repeat(offset, sizes)) / np.repeat(sizes, sizes)) % 1.0
    edges = np.cumsum(fractions)[:-1]
    split = np.empty(n, dtype=object)
    split[order] = np.asarray(SPLITS, dtype=object)[np.searchsorted(edges, position, side="right")]
    return split
