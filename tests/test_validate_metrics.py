"""Validation arithmetic: fidelity figures, held-out sampling that never reuses calibration subnets, job settings
taken from the profile, and the CLI's one-line refusal for profiles it cannot re-measure."""
from __future__ import annotations

import numpy as np
import pytest

from ofakit.device_profiles import OpStats, Profile, ProfileMeta
from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.ops import enumerate_ops
from ofakit.ofa_core.space import sample_batch, space_for_width
from ofakit.validation import fidelity, format_table, job_of, sample_test_archs, validate_profile
from ofakit.profiler.pipeline import default_job


def test_fidelity_figures() -> None:
    measured = np.array([10.0, 10.0, 10.0, 10.0, np.nan])
    predicted = np.array([10.4, 9.3, 11.2, 10.0, 5.0])
    f = fidelity(measured, predicted)
    assert f["n"] == 4
    assert f["within5"] == 50.0 and f["within10"] == 75.0
    assert f["rmse_pct"] == pytest.approx(np.sqrt((4 ** 2 + 7 ** 2 + 12 ** 2 + 0) / 4))
    assert f["mean_err_pct"] == pytest.approx((4 - 7 + 12 + 0) / 4)
    assert np.isnan(f["spearman"])  # constant measurements: no ranking to compare
    ranks = fidelity(np.arange(1.0, 11.0), np.arange(1.0, 11.0) ** 2)
    assert ranks["spearman"] == pytest.approx(1.0)
    table = format_table({"a raw": f, "a corrected": ranks})
    assert "±10%" in table and "a corrected" in table and "75.0%" in table


def _profile(calibration: dict | None = None) -> Profile:
    rows = [OpStats(key=k, ms=0.1) for k in enumerate_ops(space_for_width(1.0), [160, 192])]
    meta = ProfileMeta(name="p", device="cpu", backend="onnxruntime", threads=1, resolutions=[160, 192],
                       calibration=calibration or {})
    return Profile(meta, rows)


def test_held_out_sample_avoids_calibration_subnets_and_is_seeded() -> None:
    cal_archs = sample_batch(np.random.default_rng([7, 2]), 10, resolutions=[160, 192]).to_configs()
    prof = _profile({"fit_archs": [a.to_json() for a in cal_archs[:5]]})
    test = sample_test_archs(prof, 10, seed=7)  # the same stream: its first 5 draws are the calibration ones
    assert len(test) == 10 and len(set(test)) == 10
    assert not set(test) & set(cal_archs[:5])
    assert set(cal_archs[5:]) <= set(test)
    assert sample_test_archs(prof, 10, seed=7) == test
    assert {a.r for a in test} <= {160, 192}


def test_job_comes_from_the_profile() -> None:
    prof = _profile()
    job = default_job()
    job.rounds, job.timing.min_s = 6, 0.123
    from dataclasses import asdict

    prof.meta.method = {"job": asdict(job)}
    got = job_of(prof)
    assert got.rounds == 6 and got.timing.min_s == 0.123 and got.timing.clock == job.timing.clock
    assert job_of(prof).subnet_rounds == job.subnet_rounds
    two = job_of(prof, rounds=2)
    assert two.rounds == 2 and max(two.rounds, two.subnet_rounds) == 2  # --rounds: rounds per whole subnet


def test_imported_profiles_are_refused_in_one_line() -> None:
    prof = _profile()
    prof.meta.source, prof.meta.backend = "ofa-import:x", "ofa-lut"
    with pytest.raises(UserError, match="not measured by ofakit"):
        validate_profile(prof, 3, 0)


def test_state_factor_is_the_median_ratio_of_anchors_measured_both_times() -> None:
    from ofakit.predictors.lut import state_factor

    then = [4.0, 5.0, 6.0, 8.0, 10.0]
    now = [4.4, 5.5, np.nan, 8.0, 12.0]  # ratios 1.1, 1.1, -, 1.0, 1.2 -> median 1.1
    assert state_factor(then, now) == pytest.approx(1.1)
    assert state_factor(then[:2], now[:2]) is None  # fewer than 3 anchors measured: no factor
    assert state_factor(then[:2], now[:2], minimum=2) == pytest.approx(1.1)


def test_report_adds_a_state_adjusted_row_only_with_a_factor() -> None:
    from ofakit.validation import ValidationReport, csv_text, state_line

    archs = sample_batch(np.random.default_rng(5), 3, resolutions=[160]).to_configs()
    measured = np.array([5.0, 6.0, 7.0])
    corrected = measured / 1.08  # the device got 8% slower for whole networks since profiling
    rep = ValidationReport("p", archs, measured, measured * 0.8, corrected, state_factor=1.08)
    m = rep.metrics()
    assert set(m) == {"raw", "corrected", "state-adjusted"}
    assert m["corrected"]["within5"] == 0.0 and m["state-adjusted"]["within5"] == 100.0
    assert rep.adjusted == pytest.approx(measured)
    assert "1.080" in state_line(rep) and "adjusted_ms" in csv_text(rep).splitlines()[0]
    bare = ValidationReport("p", archs, measured, measured, corrected)
    assert set(bare.metrics()) == {"raw", "corrected"} and bare.adjusted is None
    assert "not measured" in state_line(bare)
    with pytest.raises(UserError, match="^anchors: must"):
        validate_profile(_measured_profile(), 3, 0, anchors=-1)


def _measured_profile() -> Profile:
    prof = _profile()
    prof.meta.source = "measured"
    return prof


def test_state_factor_matches_anchors_with_a_profiles_calibration_subnets() -> None:
    from ofakit.validation import ValidationReport

    cal = sample_batch(np.random.default_rng(6), 6, resolutions=[160, 192]).to_configs()
    prof = _profile({"fit_archs": [a.to_json() for a in cal[:4]], "fit_measured_ms": [4.0, 5.0, 6.0, 7.0]})
    anchors = [cal[3], cal[0], cal[5], cal[1]]  # cal[5] is not in this profile's calibration
    rep = ValidationReport("p", [], np.array([]), np.array([]), None, anchors=anchors,
                           anchor_ms=np.array([7.7, 4.4, 1.0, 5.0]))
    assert rep.n_anchors == 4
    assert rep.factor_for(prof) == pytest.approx(1.1)  # ratios 1.1, 1.1, 1.0 -> median 1.1
    assert rep.factor_for(_profile()) is None  # no stored calibration subnets


def test_state_adjusted_row_replaces_a_stored_factor_by_the_one_measured_now() -> None:
    from ofakit.validation import ValidationReport, state_line

    archs = sample_batch(np.random.default_rng(8), 3, resolutions=[160]).to_configs()
    base = np.array([5.0, 6.0, 7.0])  # the calibration as fitted
    stored = {"factor": 1.10, "date": "2026-11-26T04:00:00+00:00", "n": 10}
    rep = ValidationReport("p", archs, base * 1.04, base, base * 1.10, state_factor=1.04, stored_state=stored)
    assert rep.stored_factor == 1.10 and rep.adjusted == pytest.approx(base * 1.04)
    assert rep.metrics()["state-adjusted"]["rmse_pct"] == pytest.approx(0.0, abs=1e-9)
    line = state_line(rep)
    assert "stored state factor 1.100 (10 anchors, 2026-11-26T04:00:00+00:00)" in line and "1.040" in line
    bare = ValidationReport("p", archs, base, base, base, state_factor=1.04)
    assert bare.stored_factor == 1.0 and "no stored state factor" in state_line(bare)


def test_anchors_spread_over_the_calibration_subnets() -> None:
    from ofakit.predictors.lut import anchor_archs

    cal = sample_batch(np.random.default_rng(9), 30, resolutions=[160, 192]).to_configs()
    prof = _profile({"fit_archs": [a.to_json() for a in cal]})
    got = anchor_archs(prof, 10)
    assert len(set(got)) == 10 and got[0] == cal[0] and got[-1] == cal[-1]
    assert [cal.index(a) for a in got] == [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]
    assert anchor_archs(prof, 50) == cal and anchor_archs(prof, 0) == [] and anchor_archs(_profile(), 5) == []


def test_report_as_dataframes() -> None:
    from ofakit.validation import ValidationReport, csv_text

    archs = sample_batch(np.random.default_rng(9), 3, resolutions=[160]).to_configs()
    measured = np.array([5.0, 6.0, 7.0])
    rep = ValidationReport("p", archs, measured, measured * 0.9, measured * 1.02, state_factor=1.0)
    df = rep.to_frame()
    assert list(df.columns) == csv_text(rep).splitlines()[0].split(",") and len(df) == 3
    assert df["measured_ms"].tolist() == [5.0, 6.0, 7.0] and df.attrs["profile"] == "p"
    assert df.attrs["metrics"] == rep.metrics()
    summary = rep.metrics_frame()
    assert list(summary.index) == ["raw", "corrected", "state-adjusted"]
    assert summary.loc["raw", "within10"] == 100.0 and summary.loc["raw", "within5"] == 0.0
