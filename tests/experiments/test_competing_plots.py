"""Predicted vs Aalen-Johansen cumulative incidence: the table's numbers and the figure."""

from __future__ import annotations

import numpy as np
import pytest

from clinfuse.experiments.competing_plots import incidence_plot, incidence_table


def _cgvhd():
    from sksurv.datasets import load_cgvhd

    _, y = load_cgvhd()
    return y["ftime"].astype(float), y["status"].astype(int)


def test_observed_is_aalen_johansen_and_predicted_is_the_mean():
    from lifelines import AalenJohansenFitter

    time, cause = _cgvhd()
    times = np.array([0.05, 0.2, 0.5, 1.0, 2.0])
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 0.3, size=(len(time), 3, len(times)))
    table = incidence_table(pred, times, time, cause, ["cGvHD", "relapse", "death"])
    assert len(table) == 15 and list(table["cause"].unique()) == ["cGvHD", "relapse", "death"]
    for r, name in enumerate(["cGvHD", "relapse", "death"], 1):
        rows = table[table["cause"] == name]
        np.testing.assert_allclose(rows["predicted"], pred[:, r - 1].mean(0))
        # an independent estimator of the same curve: lifelines' Aalen-Johansen
        aj = AalenJohansenFitter(calculate_variance=False).fit(time, cause, event_of_interest=r)
        curve = aj.cumulative_density_.iloc[:, 0]
        want = curve.to_numpy()[np.searchsorted(curve.index.to_numpy(), times, side="right") - 1]
        np.testing.assert_allclose(rows["observed"], want, atol=1e-9)
        assert (rows["observed_lower"] <= rows["observed"] + 1e-12).all()
        assert (rows["observed"] <= rows["observed_upper"] + 1e-12).all()


def test_plot_written_and_bad_inputs_named(tmp_path):
    time, cause = _cgvhd()
    times = np.linspace(0, 2.5, 20)
    pred = np.zeros((len(time), 3, len(times)))
    fig, _ = incidence_plot(pred, times, time, cause, path=tmp_path / "cif.png")
    assert (tmp_path / "cif.png").stat().st_size > 1000 and len(fig.axes) == 3
    with pytest.raises(ValueError, match=r"pred_cif must be \(n, R, T\)"):
        incidence_table(pred[:, :, :-1], times, time, cause)
    with pytest.raises(ValueError, match=r"no event of \['cause_3'\]"):
        incidence_table(pred, times, time, np.where(cause == 3, 0, cause))
    with pytest.raises(ValueError, match=r"integers in \[0, 3\]"):
        incidence_table(pred, times, time, np.where(cause == 3, 4, cause))


def test_panels_named_by_cause_with_the_time_unit_and_the_band_in_the_legend():
    from clinfuse.experiments.survival_report import cause_names

    time, cause = _cgvhd()
    times = np.linspace(0, 2.5, 20)
    names = cause_names({"labels": {"cause": "0 censored, 1 cGvHD, 2 relapse, 3 death"}}, 3)
    fig, _ = incidence_plot(np.zeros((len(time), 3, len(times))), times, time, cause, cause_names=names, time_unit="years")
    assert [ax.get_title().splitlines()[0] for ax in fig.axes] == [f"cumulative incidence: {n}" for n in ("cGvHD", "relapse", "death")]
    assert fig.axes[0].get_xlabel() == "time (years)" and f"n = {len(time)}" in fig.axes[0].get_title()
    assert "95% interval (observed)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert cause_names({}, 3) is None
