"""Evolutionary search: constraints met by every returned subnet, infeasible bounds named with their exact minimum,
seeded reproducibility, several devices at once, a monotone accuracy-latency front, and the CLI.

Real parts: OFA's Note10 lookup table and OFA's pretrained accuracy predictor (from ../shared), and for the
multi-device test two GPUs' measured latencies (HELP's data) through regressors fitted here.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from ofakit.device_profiles.ofa_yaml import import_ofa
from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.ops import subnet_macs, subnet_params
from ofakit.ofa_core.search import (Constraint, EvolutionSearch, OpSumPredictor, SearchConfig, flops_constraint,
                             params_constraint, sweep)
from ofakit.ofa_core.space import ArchBatch, as_batch, encode_general, load_arch, mutate_batch, sample_batch, space_for_width
from ofakit.cli import main
from ofakit.predictors.accuracy import load_accuracy_predictor
from ofakit.predictors.lut import LUTPredictor

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
LUT_DIR = SHARED / "data" / "ofa_note10_lut"
ACC_PATH = SHARED / "data" / "ofa_acc_predictor" / "acc_predictor.pth"
HELP_PATH = SHARED / "data" / "help_ofa_gpu_latency" / "ofa_subnets_gpu_latency.jsonl"
RES = (160, 176, 192, 208, 224)
FAST = dict(population=60, generations=25, width=1.2)


@pytest.fixture(scope="module")
def note10():
    return import_ofa(LUT_DIR, "note10", 1.2)


@pytest.fixture(scope="module")
def acc():
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        yield load_accuracy_predictor(f"ofa:{ACC_PATH}")


def latency(note10, bound: float, table: bool = True) -> Constraint:
    return Constraint("latency[note10]", LUTPredictor(note10), bound, "ms", note10.table() if table else None)


def test_latency_flops_params_met_by_every_returned_subnet(note10, acc):
    cons = [latency(note10, 22.0), flops_constraint(300, 1.2), params_constraint(7.5, 1.2)]
    res = EvolutionSearch(acc, cons, SearchConfig(**FAST)).run(seed=2)
    lut = LUTPredictor(note10)
    for b in (res.population, as_batch(res.arch)):
        assert np.all(lut.predict(b) <= 22.0)
        configs = b.to_configs()
        assert all(subnet_macs(a) <= 300e6 for a in configs)  # independent per-op count
        assert all(subnet_params(a) <= 7.5e6 for a in configs)
        assert set(b.r.tolist()) <= set(RES)
    assert res.values["latency[note10]"] == pytest.approx(float(lut.predict(res.arch)[0]))
    assert res.accuracy == pytest.approx(float(acc.predict(res.arch)[0]))
    assert res.arch.width == 1.2 and 0.7 < res.accuracy < 0.9
    assert res.population_accuracy[0] == res.accuracy and np.all(np.diff(res.population_accuracy) <= 0)


def test_search_beats_random_sampling_with_the_same_budget(note10, acc):
    cons = [latency(note10, 25.0)]
    res = EvolutionSearch(acc, cons, SearchConfig(**FAST)).run(seed=0)
    cand = sample_batch(np.random.default_rng(0), 20 * res.evaluations, space_for_width(1.2), RES)
    ok = cand[np.flatnonzero(LUTPredictor(note10).predict(cand) <= 25.0)[: res.evaluations]]
    assert res.accuracy > acc.predict(ok).max() + 0.003


@pytest.mark.parametrize("table", [True, False])
def test_infeasible_latency_names_the_smallest_achievable(note10, acc, table):
    search = EvolutionSearch(acc, [latency(note10, 9.0, table)], SearchConfig(**FAST))
    smallest, genes = search.smallest(0)
    with pytest.raises(UserError) as err:
        search.run(seed=0)
    msg = str(err.value)
    assert "latency[note10] <= 9 ms cannot be met" in msg and f"{smallest:.4g} ms" in msg
    assert ("among the smallest configs" in msg) != table
    # the reported minimum is reached by a real subnet and nothing found at random or nearby goes below it
    lut = LUTPredictor(note10)
    best = search.codec.batch(genes[:1])
    assert float(lut.predict(best)[0]) == pytest.approx(smallest)
    rng = np.random.default_rng(0)
    random = sample_batch(rng, 20000, space_for_width(1.2), RES)
    nearby = mutate_batch(rng, ArchBatch.concat([best] * 5000), 0.2, RES)
    assert lut.predict(nearby).min() >= smallest - 1e-9
    if table:  # exact: the minimum over the space, far below what 20,000 random subnets reach
        assert 9.5 < smallest < 10.5 and lut.predict(random).min() > smallest + 1.0


def test_infeasible_flops_and_joint_constraints(note10, acc):
    with pytest.raises(UserError, match=r"flops <= 20 M cannot be met: the smallest achievable is \d+(\.\d+)? M"):
        EvolutionSearch(acc, [flops_constraint(20, 1.2)], SearchConfig(**FAST)).run()
    # each bound alone can be met, both together cannot: at least 400 M FLOPs and at most 10 ms
    macs = OpSumPredictor("macs", 1.2)
    at_least = Constraint("-flops", type("Neg", (), {"predict": lambda self, a: -macs.predict(a)})(), -400.0, "M")
    cons = [latency(note10, 10.0), at_least]
    with pytest.raises(UserError, match="cannot be met together: no subnet found with latency"):
        EvolutionSearch(acc, cons, SearchConfig(**FAST)).run()


def test_seeded_search_is_reproducible(note10, acc):
    cons = [latency(note10, 20.0)]
    a = EvolutionSearch(acc, cons, SearchConfig(**FAST)).run(seed=7)
    b = EvolutionSearch(acc, cons, SearchConfig(**FAST)).run(seed=7)
    c = EvolutionSearch(acc, cons, SearchConfig(**FAST)).run(seed=8)
    assert a.arch == b.arch and a.accuracy == b.accuracy and np.array_equal(a.history, b.history)
    assert a.evaluations == b.evaluations
    assert not np.array_equal(a.history, c.history)


def test_ofa_plain_algorithm_runs_without_additions(note10, acc):
    cfg = SearchConfig.ofa(population=40, generations=15, width=1.2)
    assert not cfg.unique and not cfg.local_search
    res = EvolutionSearch(acc, [latency(note10, 25.0)], cfg).run(seed=1)
    assert res.evaluations == 40 * 16  # OFA predicts every child, duplicates included
    assert res.values["latency[note10]"] <= 25.0 and np.all(np.diff(res.history) >= 0)


class _Ridge:
    """A latency regressor over our encoding, fitted on one GPU config's measured latencies (HELP)."""

    def __init__(self, archs: ArchBatch, ms: np.ndarray):
        x = np.c_[encode_general(archs), np.ones(len(archs))]
        self.coef = np.linalg.solve(x.T @ x + 1e-3 * np.eye(x.shape[1]), x.T @ ms)

    def predict(self, archs) -> np.ndarray:
        b = as_batch(archs)
        return np.c_[encode_general(b), np.ones(len(b))] @ self.coef


def test_two_devices_each_with_its_own_bound(acc):
    rows = [json.loads(line) for line in HELP_PATH.read_text().splitlines()]
    archs = ArchBatch(*(np.array([r[k] for r in rows]) for k in ("ks", "e", "d", "r")), 1.0)
    gpus = {name: _Ridge(archs, np.array([r["latency_ms"][name] for r in rows])) for name in ("2080ti_1", "v100_64")}
    bounds = {"2080ti_1": 10.5, "v100_64": 16.0}
    cons = [Constraint(f"latency[{n}]", p, bounds[n], "ms") for n, p in gpus.items()]
    cfg = SearchConfig(population=60, generations=25, width=1.0)
    both = EvolutionSearch(acc, cons, cfg).run(seed=3)
    for n, p in gpus.items():
        assert np.all(p.predict(both.population) <= bounds[n]) and both.values[f"latency[{n}]"] <= bounds[n]
    # each bound matters: searching under one alone breaks the other
    for keep, other in ((0, "v100_64"), (1, "2080ti_1")):
        alone = EvolutionSearch(acc, [cons[keep]], cfg).run(seed=3)
        assert gpus[other].predict(alone.arch)[0] > bounds[other]
        assert alone.accuracy > both.accuracy


def test_sweep_front_is_monotone_and_meets_each_bound(note10, acc):
    bounds = [24.0, 16.0, 18.0, 20.0, 22.0]
    results = sweep(acc, [latency(note10, 99.0)], bounds, config=SearchConfig(population=50, generations=12,
                                                                                width=1.2), seed=0)
    got = [r.accuracy for r in results]
    assert np.all(np.diff(got) >= 0) and got[-1] > got[0] + 0.01
    for b, r in zip(sorted(bounds), results):
        assert r.values["latency[note10]"] <= b


def test_bad_config_and_predictor_objects(note10, acc):
    with pytest.raises(UserError, match="population"):
        EvolutionSearch(acc, [latency(note10, 25)], SearchConfig(population=1))
    with pytest.raises(UserError, match="accuracy predictor"):
        EvolutionSearch(object(), [latency(note10, 25)])
    with pytest.raises(UserError, match="resolution 128 is not in its table"):
        EvolutionSearch(acc, [latency(note10, 25)], SearchConfig(resolutions=(128, 160), width=1.2))
    with pytest.raises(UserError, match="its table is for width 1.2, the search for width 1.0"):
        EvolutionSearch(acc, [latency(note10, 25)], SearchConfig(width=1.0))
    bad_table = Constraint("latency[note10]", OpSumPredictor("macs", 1.2), 25, "ms", note10.table())
    with pytest.raises(UserError, match="does not match its predictor"):
        EvolutionSearch(acc, [bad_table], SearchConfig(width=1.2))


# --- CLI ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def profile_folder(tmp_path_factory, note10):
    folder = tmp_path_factory.mktemp("profiles")
    note10.save(folder / "note10")
    import_ofa(LUT_DIR, "note10b", 1.2).save(folder / "note10b")
    return folder


@pytest.fixture
def profile_dir(profile_folder, monkeypatch):
    monkeypatch.setenv("OFAKIT_PROFILE_DIR", str(profile_folder))
    return profile_folder


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_an_arch_json_for_export(profile_dir, capsys, tmp_path, note10):
    out = tmp_path / "best.json"
    code, stdout, err = cli(capsys, "search", "--profile", "note10", "--latency", "25", "--profile", "note10b",
                            "--latency", "22", "--flops", "400", "--accuracy-predictor", f"ofa:{ACC_PATH}",
                            "--resolutions", "160,176,192,208,224", "--population", "50", "--generations", "15",
                            "--seed", "1", "--out", str(out))
    assert code == 0, err
    arch = load_arch(str(out))
    assert arch.width == 1.2 and arch.r in RES
    assert float(LUTPredictor(note10).predict(arch)[0]) <= 22.0 and subnet_macs(arch) <= 400e6
    assert "predicted top-1:" in stdout and "latency[note10]:" in stdout and "latency[note10b]:" in stdout


def test_cli_ofa_flag_runs_the_plain_algorithm(profile_dir, capsys):
    code, stdout, err = cli(capsys, "search", "--profile", "note10", "--latency", "20", "--params", "6",
                            "--accuracy-predictor", f"ofa:{ACC_PATH}", "--ofa", "--population", "30",
                            "--generations", "5")
    assert code == 0, err
    assert f"{30 * 6} accuracy predictions" in stdout and "params:" in stdout


def test_cli_uses_a_profiles_calibration_synthetic_times(tmp_path, monkeypatch, capsys, note10):
    """A profile with a calibration is searched with its calibrated predictor (times here synthetic: 1.3x the
    LUT sum + 2 ms, standing in for measured subnets)."""
    from ofakit.device_profiles import load_profile
    from ofakit.predictors.lut import CalibratedLUTPredictor

    archs = sample_batch(np.random.default_rng(0), 40, space_for_width(1.2), RES)
    ms = 1.3 * LUTPredictor(note10).predict(archs) + 2.0
    prof = import_ofa(LUT_DIR, "note10cal", 1.2)
    prof.meta.calibration = CalibratedLUTPredictor(prof, ("lut_ms", "n_ops")).fit(archs, ms).to_calibration()
    prof.save(tmp_path / "note10cal")
    monkeypatch.setenv("OFAKIT_PROFILE_DIR", str(tmp_path))
    out = tmp_path / "a.json"
    code, stdout, err = cli(capsys, "search", "--profile", "note10cal", "--latency", "25", "--accuracy-predictor",
                            f"ofa:{ACC_PATH}", "--population", "30", "--generations", "5", "--out", str(out))
    assert code == 0, err
    arch = load_arch(str(out))
    calibrated = float(CalibratedLUTPredictor(load_profile("note10cal")).predict(arch)[0])
    assert calibrated <= 25.0 and calibrated == pytest.approx(1.3 * float(LUTPredictor(note10).predict(arch)[0]) + 2)
    assert f"latency[note10cal]: {calibrated:.4g} ms" in stdout


def test_cli_sweep_writes_a_monotone_front(profile_dir, capsys, tmp_path):
    out = tmp_path / "front.csv"
    code, stdout, err = cli(capsys, "search", "--profile", "note10", "--sweep", "15:23:4", "--accuracy-predictor",
                            f"ofa:{ACC_PATH}", "--population", "40", "--generations", "10", "--out", str(out))
    assert code == 0, err
    rows = list(csv.DictReader(out.open()))
    assert [float(r["bound"]) for r in rows] == [15.0, 19.0, 23.0]
    accs = [float(r["accuracy"]) for r in rows]
    assert accs == sorted(accs)
    assert all(float(r["latency[note10]"]) <= float(r["bound"]) for r in rows)
    assert json.loads(rows[-1]["arch"])["width"] == 1.2
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, expected", [
    (["--profile", "note10", "--latency", "5"], "latency[note10] <= 5 ms cannot be met: the smallest achievable is"),
    (["--profile", "note10"], "--latency: give one bound per device"),
    (["--latency", "25"], "--latency: give one bound per device"),
    ([], "no constraint"),
    (["--profile", "nosuch", "--latency", "25"], "no device profile 'nosuch'"),
    (["--profile", "note10", "--latency", "25", "--resolutions", "128,160"], "--resolutions: 128 is not in profile"),
    (["--profile", "note10", "--latency", "25", "--resolutions", "1x"], "--resolutions"),
    (["--profile", "note10", "--latency", "25", "--width", "1.0"], "--width: 1.0 differs"),
    (["--profile", "note10", "--latency", "-3"], "--latency: must be > 0"),
    (["--profile", "note10", "--sweep", "30:20:2", "--out", "x.csv"], "--sweep: need 0 < LO <= HI"),
    (["--profile", "note10", "--sweep", "15:35"], "--sweep"),
    (["--profile", "note10", "--latency", "25", "--population", "1"], "population: must be at least 2"),
    (["--profile", "note10", "--latency", "25", "--accuracy-predictor", "pth:x"], "expected ofa, ofa:PATH or mlp:PATH"),
    (["--profile", "note10", "--latency", "25", "--accuracy-predictor", "ofa:/nonexistent.pth"], "cannot read"),
])
def test_cli_mistakes_give_one_line_and_exit_2(profile_dir, capsys, args, expected):
    if not any(a == "--accuracy-predictor" for a in args):
        args = [*args, "--accuracy-predictor", f"ofa:{ACC_PATH}"]
    code, out, err = cli(capsys, "search", *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("ofakit: error:") and expected in err, err


def test_cli_predictor_option_names_the_latency_predictor_or_a_saved_one(profile_dir, capsys, tmp_path, note10):
    """`--predictor lut` drives every --profile's constraint; a saved predictor folder (fit-latency, few-shot) is
    a device of its own with its --latency after the profiles'."""
    from ofakit.predictors.regressors import LatencyRegressor

    b = sample_batch(np.random.default_rng(5), 40, space_for_width(1.2), RES)
    folder = LatencyRegressor(model="ridge", profile=note10).fit(b, note10.table().evaluate(b) * 1.5).save(
        tmp_path / "fitted")
    common = ["--accuracy-predictor", f"ofa:{ACC_PATH}", "--population", "40", "--generations", "8", "--seed", "2"]
    code, out, err = cli(capsys, "search", "--profile", "note10", "--latency", "25", "--predictor", "lut", *common)
    assert code == 0, err
    lut_ms = float(re.search(r"latency\[note10\]: ([\d.]+) ms", out).group(1))
    code, out, err = cli(capsys, "search", "--predictor", str(folder), "--latency", "30", *common)
    assert code == 0, err
    saved_ms = float(re.search(r"latency\[fitted\]: ([\d.]+) ms", out).group(1))
    assert lut_ms <= 25 and saved_ms <= 30
    code, _, err = cli(capsys, "search", "--profile", "note10", "--latency", "25", "--predictor", "magic", *common)
    assert code == 2 and "neither a known name" in err
