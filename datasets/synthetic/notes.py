"""Render the notes view ``v_notes`` into short clinical notes assembled from templates.

Each present patient gets 1-4 notes at random times in ``[0, 48]`` h. Per note the standardised
view (plus a little per-note noise) picks the words by quantile of ``N(0, 1)``:

* component 0 -> severity (mild / moderate / severe / critical, by quartile),
* component 1 -> symptoms (three symptom families, by tercile),
* component 2 -> trajectory (improving / stable / worsening, by tercile),
* component 3 -> respiratory support (four levels, by quartile).

Neutral filler sentences, in random order, pad every note to a random length of 30-80 words.

That is ``signal="keywords"`` (the default): every informative word is there only because of the
patient. ``signal="context"`` writes components 1-3 so that only a word's place says what it
means: two symptoms of the patient's family are *reported* and two of another, random family
*denied*; the current trajectory is followed by a random different *earlier* one; the current
support by a random different *previous* one. Each note then holds the words of two symptom
families, two trajectories and two support levels, and which of them is the patient's own shows
only in word order (what a bag of words cannot see); severity stays a keyword.
"""

import numpy as np
import pandas as pd
from scipy.stats import norm

HORIZON_HOURS = 48.0
SIGNALS = ("keywords", "context")
NOTE_NOISE = 0.35
MIN_WORDS, MAX_WORDS = 30, 80

NOTE_TYPES = ("progress note:", "nursing note:", "physician note:", "consult note:")
SEVERITY = ("mild", "moderate", "severe", "critical")
SYMPTOMS = (
    ("fatigue", "headache", "nausea"),
    ("cough", "fever", "abdominal pain"),
    ("dyspnea", "chest pain", "confusion"),
)
TRAJECTORY = ("improving", "stable", "worsening")
SUPPORT = ("room air", "nasal cannula", "high flow oxygen", "mechanical ventilation")
FILLERS = (
    "family updated at the bedside today.",
    "medications reviewed with the pharmacy team.",
    "will continue the current plan and monitor.",
    "labs and imaging were reviewed this morning.",
    "patient resting in bed at the time of exam.",
    "no new complaints reported overnight by nursing.",
    "care goals discussed with patient and family.",
    "diet advanced as tolerated per unit protocol.",
    "pain controlled on the current regimen.",
    "physical therapy consulted for a mobility assessment.",
    "skin intact with no pressure injury noted.",
    "intake and output recorded per routine.",
    "lines and drains checked and documented.",
    "vital signs recorded as per unit policy.",
)


def _bin(x: np.ndarray, n_bins: int) -> np.ndarray:
    """Index of the ``N(0, 1)`` quantile bin of every value (``n_bins`` equal-probability bins)."""
    return np.searchsorted(norm.ppf(np.arange(1, n_bins) / n_bins), x)


def _words(options) -> np.ndarray:
    """Word count of every option string."""
    return np.array([len(option.split()) for option in options])


def _choose(options, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The chosen strings and their word counts (vectorised lookup)."""
    return np.asarray(options, dtype=object)[index], _words(options)[index]


def _other(index: np.ndarray, n_options: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly drawn option different from ``index`` (same shape)."""
    return (index + rng.integers(1, n_options, size=index.shape)) % n_options


def render_notes(
    u: np.ndarray, patient_ids, present: np.ndarray, rng: np.random.Generator, signal: str = "keywords"
) -> pd.DataFrame:
    """Notes table for the patients who have the modality.

    Args:
        u: Standardised notes view ``v_notes / sd``, shape ``(n, d)`` with ``d >= 4``.
        patient_ids: ``n`` patient ids (zero-padded, so index order is id order).
        present: Bool ``(n,)``, True where the patient has notes.
        rng: Source of randomness (the generator's "notes" stream).
        signal: ``"keywords"`` or ``"context"`` (module docstring).

    Returns:
        DataFrame ``patient_id, time, text`` sorted by patient id then time.
    """
    if signal not in SIGNALS:
        raise ValueError(f"notes signal must be one of {SIGNALS}, got {signal!r}")
    rows = np.flatnonzero(np.asarray(present, dtype=bool))
    pat = np.repeat(rows, rng.integers(1, 5, size=rows.size))
    n_notes = pat.size
    time = np.round(rng.uniform(0.0, HORIZON_HOURS, size=n_notes), 3)
    un = u[pat, :4] + NOTE_NOISE * rng.standard_normal((n_notes, 4))

    note_type, n_type = _choose(NOTE_TYPES, rng.integers(0, len(NOTE_TYPES), size=n_notes))
    severity, n_sev = _choose(SEVERITY, _bin(un[:, 0], 4))
    family = _bin(un[:, 1], 3)
    pick = np.argsort(rng.uniform(size=(n_notes, 3)), axis=1)[:, :2]  # two distinct symptoms
    symptom_a, n_a = _choose(sum(SYMPTOMS, ()), 3 * family + pick[:, 0])
    symptom_b, n_b = _choose(sum(SYMPTOMS, ()), 3 * family + pick[:, 1])
    trajectory, n_traj = _choose(TRAJECTORY, _bin(un[:, 2], 3))
    support, n_sup = _choose(SUPPORT, _bin(un[:, 3], 4))
    text = (
        note_type + " patient seen with " + severity + " " + symptom_a + " and " + symptom_b + "."
        + " overall condition " + trajectory + " since admission."
        + " currently on " + support + "."
    )
    length = n_type + 3 + n_sev + n_a + 1 + n_b + 2 + n_traj + 2 + 2 + n_sup
    if signal == "context":  # drawn after the keyword note, which it replaces
        text, length = _context_note(note_type, n_type, severity, n_sev, symptom_a, n_a, symptom_b, n_b,
                                     trajectory, n_traj, support, n_sup, un, family, rng)

    # Fillers in a random order per note, kept while the running length stays within the target.
    fillers = np.asarray(FILLERS, dtype=object)
    filler_words = _words(FILLERS)
    order = np.argsort(rng.uniform(size=(n_notes, len(FILLERS))), axis=1)
    target = rng.integers(MIN_WORDS + filler_words.max(), MAX_WORDS + 1, size=n_notes)
    keep = length[:, None] + np.cumsum(filler_words[order], axis=1) <= target[:, None]
    for j in range(len(FILLERS)):
        text = np.where(keep[:, j], text + " " + fillers[order[:, j]], text)

    sort = np.lexsort((time, pat))
    ids = np.asarray(patient_ids, dtype=object)
    return pd.DataFrame({"patient_id": ids[pat[sort]], "time": time[sort], "text": text[sort]})


def _context_note(note_type, n_type, severity, n_sev, symptom_a, n_a, symptom_b, n_b,
                  trajectory, n_traj, support, n_sup, un, family, rng):
    """The ``"context"`` note and its word count: the patient's own symptoms, trajectory and support
    next to random others, told apart only by their place in the sentence."""
    n_notes = len(note_type)
    other = _other(family, len(SYMPTOMS), rng)
    pick = np.argsort(rng.uniform(size=(n_notes, 3)), axis=1)[:, :2]
    denied_a, n_da = _choose(sum(SYMPTOMS, ()), 3 * other + pick[:, 0])
    denied_b, n_db = _choose(sum(SYMPTOMS, ()), 3 * other + pick[:, 1])
    earlier, n_earlier = _choose(TRAJECTORY, _other(_bin(un[:, 2], 3), len(TRAJECTORY), rng))
    previous, n_prev = _choose(SUPPORT, _other(_bin(un[:, 3], 4), len(SUPPORT), rng))
    text = (
        note_type + " patient seen with " + severity + " illness. reports " + symptom_a + " and " + symptom_b
        + ". denies " + denied_a + " and " + denied_b + "."
        + " overall condition " + trajectory + ", earlier " + earlier + "."
        + " now on " + support + ", previously " + previous + "."
    )
    length = (n_type + 3 + n_sev + 2 + n_a + 1 + n_b + 1 + n_da + 1 + n_db
              + 2 + n_traj + 1 + n_earlier + 2 + n_sup + 1 + n_prev)
    return text, length

