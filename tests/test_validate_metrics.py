"""Validation arithmetic: fidelity figures, held-out sampling that never reuses calibration subnets, job settings
taken from the profile, and the CLI's one-line refusal for profiles it cannot re-measure."""
from __future__ import annotations

import numpy as np
import pytest

from device_profiles import OpStats, Profile, ProfileMeta
from ofa_core.errors import UserError
from ofa_core.ops import enumerate_ops
from ofa_core.space import sample_batch, space_for_width
from ofakit.commands.validate import fidelity, format_table, job_of, sample_test_archs, validate_profile
from profiler.pipeline import default_job


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
    assert job_of(prof, rounds=2).rounds == 2


def test_imported_profiles_are_refused_in_one_line() -> None:
    prof = _profile()
    prof.meta.source, prof.meta.backend = "ofa-import:x", "ofa-lut"
    with pytest.raises(UserError, match="not measured by ofakit"):
        validate_profile(prof, 3, 0)
