"""Device profiles: operator enumeration and OFA keys, Note10 import/export, atomic saves, one-line CLI errors
for bad profiles and missing keys, and the calibrated LUT predictor's fit and folding."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

import ofakit.device_profiles as device_profiles
from ofakit.device_profiles import OpStats, Profile, ProfileError, ProfileMeta, load_profile
from ofakit.device_profiles.ofa_yaml import export_ofa, import_ofa
from ofakit.ofa_core.ops import MissingOpError, OpSpec, enumerate_ops, resolution_ops, subnet_ops
from ofakit.ofa_core.space import DEFAULT_RESOLUTIONS, sample_batch, space_for_width
from ofakit.predictors.lut import CalibratedLUTPredictor, LUTPredictor

NOTE10 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ofa_note10_lut"


def test_operator_counts_per_resolution_and_total() -> None:
    spec = space_for_width(1.0)
    assert all(len({op.key for op in resolution_ops(spec, r)}) == 96 for r in DEFAULT_RESOLUTIONS)
    assert len(enumerate_ops(spec)) == 1257
    counts = [len(enumerate_ops(spec, DEFAULT_RESOLUTIONS[: i + 1])) for i in range(len(DEFAULT_RESOLUTIONS))]
    assert counts[0] == 96 and all(b > a for a, b in zip(counts, counts[1:]))


def test_ofa_keys_round_trip_and_match_note10_exactly() -> None:
    for op in enumerate_ops(space_for_width(1.0)).values():
        assert OpSpec.from_key(op.key) == op and OpSpec.from_key(op.key).key == op.key
    spec12 = space_for_width(1.2)
    for path in sorted(NOTE10.glob("*_lookup_table.yaml")):
        r = int(path.name.split("_")[0])
        keys = set(yaml.load(path.read_text(), Loader=yaml.CSafeLoader))
        assert keys == {op.key for op in resolution_ops(spec12, r)}
        assert all(OpSpec.from_key(k).key == k for k in keys)


def test_note10_import_has_all_entries_and_exports_back_exactly(tmp_path: Path) -> None:
    prof = import_ofa(NOTE10, "note10", 1.2)
    assert len(prof) == 1632 and prof.meta.width == 1.2
    prof.save(tmp_path / "note10")
    back = load_profile(tmp_path / "note10")
    assert len(back) == 1632
    files = export_ofa(back, tmp_path / "yaml")
    assert len(files) == 17
    for f in files:
        ours = yaml.safe_load(f.read_text())
        theirs = yaml.safe_load((NOTE10 / f.name).read_text())
        assert ours == theirs
    # the plain LUT sum of a subnet equals OFA's own sum over the YAML means
    arch = sample_batch(np.random.default_rng(0), 1, spec=space_for_width(1.2), resolutions=[192]).to_configs()[0]
    table = yaml.safe_load((NOTE10 / "192_lookup_table.yaml").read_text())
    ofa_sum = sum(table[op.key]["mean"] for op in subnet_ops(arch))
    assert LUTPredictor(back).predict([arch])[0] == pytest.approx(ofa_sum, rel=1e-12)


def test_cli_import_and_export_ofa(tmp_path: Path, cli) -> None:
    r = cli("profile", "import-ofa", str(NOTE10), "--name", "n10", "--width", "1.2", "--out", str(tmp_path / "n10"))
    assert r.returncode == 0, r.stderr
    assert "1632 entries" in r.stdout
    r = cli("profile", "export-ofa", str(tmp_path / "n10"), str(tmp_path / "yaml"))
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "yaml").glob("*.yaml"))) == 17
    r = cli("profile", "import-ofa", str(NOTE10), "--name", "n10", "--width", "1.0", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "wrong --width" in r.stderr


def _small_profile(name: str = "tiny") -> Profile:
    spec = space_for_width(1.0)
    rows = [OpStats(key=op.key, ms=0.01 + op.macs / 1e8, rounds=4) for op in enumerate_ops(spec, [160]).values()]
    return Profile(ProfileMeta(name=name, device="cpu", backend="onnxruntime", threads=1, resolutions=[160]), rows)


def test_failed_save_leaves_old_files_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prof = _small_profile()
    folder = prof.save(tmp_path / "tiny")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    prof.add(OpStats(key=next(iter(prof)).key, ms=123.0))
    prof.meta.device = "changed"
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):  # the first file lands, the disk "fails" on the second
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(device_profiles.os, "replace", failing_replace)
    with pytest.raises(OSError):
        prof.save(folder)
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == sorted(before)  # no temp file left behind
    assert (folder / "profile.json").read_bytes() == before["profile.json"]  # the old metadata survived whole
    assert load_profile(folder).meta.device == "cpu"


def test_cli_gives_one_line_for_bad_profiles(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFAKIT_PROFILE_DIR", str(tmp_path))
    good = _small_profile().save(tmp_path / "good")
    cases = {}
    missing = tmp_path / "missing-lut"
    shutil.copytree(good, missing)
    (missing / "lut.csv").unlink()
    cases[str(missing)] = "cannot read lookup table"
    corrupt = tmp_path / "corrupt"
    shutil.copytree(good, corrupt)
    (corrupt / "profile.json").write_text('{"name": "x", ')
    cases[str(corrupt)] = "corrupt profile metadata"
    schema = tmp_path / "schema"
    shutil.copytree(good, schema)
    meta = json.loads((schema / "profile.json").read_text())
    meta["schema_version"] = 99
    (schema / "profile.json").write_text(json.dumps(meta))
    cases[str(schema)] = "schema version 99"
    badrow = tmp_path / "badrow"
    shutil.copytree(good, badrow)
    with open(badrow / "lut.csv", "a") as f:
        f.write("Conv-input:oops,,1.0,,,,,,,,\n")
    cases[str(badrow)] = "corrupt lookup table row"
    cases["no-such-profile"] = "no device profile 'no-such-profile'"
    for target, msg in cases.items():
        for args in (("validate", target, "--n", "2"), ("profile", "export-ofa", target, str(tmp_path / "y"))):
            r = cli(*args)
            assert r.returncode == 2, (args, r.stderr)
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and msg in lines[0], (args, r.stderr)


def test_missing_key_is_named_by_api_and_cli(tmp_path: Path, cli) -> None:
    prof = _small_profile()
    gone = next(op for op in resolution_ops(space_for_width(1.0), 160) if op.kind == "expanded_conv" and op.mid > 100)
    rows = [s for s in prof if s.key != gone.key]
    holey = Profile(prof.meta, rows)
    folder = holey.save(tmp_path / "holey")
    with pytest.raises(MissingOpError, match=gone.key.replace("|", r"\|")):
        export_ofa(load_profile(folder), tmp_path / "y")
    r = cli("profile", "export-ofa", str(folder), str(tmp_path / "y2"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and gone.key in r.stderr
    # a population that never uses the missing op still predicts
    batch = sample_batch(np.random.default_rng(1), 200, resolutions=[160])
    users = np.array([any(op.key == gone.key for op in subnet_ops(a)) for a in batch.to_configs()])
    assert users.any() and (~users).any()
    assert np.isfinite(LUTPredictor(holey).predict(batch[np.flatnonzero(~users)])).all()
    with pytest.raises(MissingOpError, match="expanded_conv"):
        LUTPredictor(holey).predict(batch[np.flatnonzero(users)])


def test_calibrated_predictor_fits_folds_and_round_trips(tmp_path: Path) -> None:
    prof = _small_profile()
    batch = sample_batch(np.random.default_rng(2), 40, resolutions=[160])
    archs = batch.to_configs()
    lut = LUTPredictor(prof).predict(batch)
    params = np.array([sum(op.params for op in subnet_ops(a)) / 1e6 for a in archs])
    n_ops = np.array([len(subnet_ops(a)) for a in archs])
    truth = 1.1 * lut + 0.3 * params + 0.02 * n_ops + 0.5
    cal = CalibratedLUTPredictor(prof, ("lut_ms", "params_m", "n_ops")).fit(archs[:12], truth[:12])
    assert cal.coef_ == pytest.approx([1.1, 0.3, 0.02], rel=1e-6) and cal.intercept_ == pytest.approx(0.5, rel=1e-6)
    assert cal.predict(batch) == pytest.approx(truth, rel=1e-9)  # folded per-op table == explicit features
    with pytest.raises(ProfileError, match="no calibration"):
        CalibratedLUTPredictor(prof).predict(batch)
    prof.meta.calibration = cal.to_calibration(archs[:12], truth[:12])
    assert prof.meta.calibration["fit_rmse_pct"] < 1e-6
    folder = prof.save(tmp_path / "cal")
    json.loads((folder / "profile.json").read_text())  # plain JSON
    loaded = CalibratedLUTPredictor(load_profile(folder))
    assert loaded.predict(batch) == pytest.approx(truth, rel=1e-9)


def test_huber_calibration_shrugs_off_a_subnet_measured_in_a_slow_spell() -> None:
    prof = _small_profile()
    batch = sample_batch(np.random.default_rng(3), 20, resolutions=[160])
    lut = LUTPredictor(prof).predict(batch)
    noise = np.random.default_rng(4).normal(0, 0.01, len(lut))
    truth = (1.15 * lut + 0.4) * (1 + noise)
    measured = truth.copy()
    measured[3] *= 1.45  # one subnet caught in the CPU's slow state
    huber = CalibratedLUTPredictor(prof, ("lut_ms",)).fit(batch, measured)
    plain = CalibratedLUTPredictor(prof, ("lut_ms",), loss="squared").fit(batch, measured)
    clean = np.delete(np.arange(len(lut)), 3)
    err = lambda p: np.abs(p.predict(batch)[clean] / truth[clean] - 1).max()  # noqa: E731
    assert err(huber) < 0.03 and err(huber) < 0.6 * err(plain), (err(huber), err(plain))
    assert huber.to_calibration()["loss"] == "huber"
