"""The synthetic cohort's ``notes_signal``: where a note carries the patient's state."""

import re

import numpy as np

from clinfuse.datasets.notes import tokenize
from clinfuse.datasets.synthetic.notes import MAX_WORDS, SUPPORT, SYMPTOMS, TRAJECTORY, _bin, render_notes

N = 400


def _notes(signal):
    rng = np.random.default_rng(5)
    u = rng.standard_normal((N, 4))
    ids = np.array([f"P{i:05d}" for i in range(N)], dtype=object)
    return u, render_notes(u, ids, np.ones(N, bool), np.random.default_rng(6), signal)


def _family(symptom: str) -> int:
    return next(k for k, fam in enumerate(SYMPTOMS) if symptom in fam)


def test_context_notes_put_the_patients_own_words_in_their_place_and_others_beside_them():
    u, notes = _notes("context")
    pattern = re.compile(r"reports (.+) and (.+)\. denies (.+) and (.+)\. overall condition (\w+), earlier (\w+)\. "
                         r"now on (.+), previously (.+?)\.")
    rows = notes["patient_id"].str[1:].astype(int).to_numpy()
    own_family, own_traj, own_support = [], [], []
    for text in notes["text"]:
        rep_a, rep_b, den_a, den_b, traj, earlier, support, previous = pattern.search(text).groups()
        assert _family(rep_a) == _family(rep_b) != _family(den_a) == _family(den_b)
        assert traj != earlier and support != previous
        own_family.append(_family(rep_a))
        own_traj.append(TRAJECTORY.index(traj))
        own_support.append(SUPPORT.index(support))
        assert len(tokenize(text)) <= MAX_WORDS
    # the words in the patient's place follow the view (up to the per-note noise)
    for own, comp, bins in ((own_family, 1, 3), (own_traj, 2, 3), (own_support, 3, 4)):
        assert np.mean(np.array(own) == _bin(u[rows, comp], bins)) > 0.7
    # every note's bag of words holds two symptom families, two trajectories and two support levels
    bags = notes["text"].map(lambda t: set(tokenize(t)))
    assert all(sum(w in bag for w in TRAJECTORY) == 2 for bag in bags)


def test_keyword_notes_deny_nothing():
    _, default = _notes("keywords")
    assert not default["text"].str.contains("denies").any()
