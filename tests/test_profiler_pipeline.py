"""A small real profile of this CPU (onnxruntime, one thread) and its validation through the CLI, resume of a
killed `ofakit profile`, the builder cache and backend registry, and quick-mode interpolation."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ofakit.device_profiles import load_profile
from ofakit.ofa_core.ops import enumerate_ops, resolution_ops
from ofakit.ofa_core.space import sample_batch, space_for_width
from ofakit.predictors.lut import CalibratedLUTPredictor, LUTPredictor
from ofakit.profiler.agent import ofakit_agent as agent
from ofakit.profiler.backends import get_backend, list_backends
from ofakit.profiler.builder import Builder
from ofakit.profiler.interpolate import interpolate, pick_resolutions
from ofakit.profiler.items import Item

SPEC = space_for_width(1.0)
FAST = ["--min-time", "0.003", "--rounds", "2", "--extra-rounds", "0"]


def test_backends_are_registered_one_file_each() -> None:
    assert {"onnxruntime", "tflite", "torch"} <= set(list_backends())
    assert get_backend("onnxruntime").format == "onnx"
    with pytest.raises(Exception, match="unknown backend 'nope'"):
        get_backend("nope")


def test_builder_caches_models_and_records_failures(tmp_path: Path) -> None:
    b = Builder(get_backend("onnxruntime"), tmp_path, jobs=1)
    pool = next(op for op in resolution_ops(SPEC, 128) if op.kind == "AvgPool2D")
    bad = Item("op", "expanded_conv-input:8x8x16-output:8x8x24-expand:0-kernel:3-stride:1-idskip:0-se:0-hs:0")
    res = b.build([Item.op(pool), bad])
    assert res[pool.key].ok and os.path.getsize(res[pool.key].path) > 0
    assert not res[bad.id].ok and res[bad.id].error
    mtime = os.path.getmtime(res[pool.key].path)
    again = b.build([Item.op(pool)])
    assert again[pool.key].seconds == 0 and os.path.getmtime(again[pool.key].path) == mtime


def test_torch_backend_measures_ops_and_a_subnet(tmp_path: Path) -> None:
    from ofakit.profiler.devices import resolve
    from ofakit.profiler.pipeline import measure_items

    ops = [op for op in resolution_ops(SPEC, 128) if op.kind in ("AvgPool2D", "Logits")]
    arch = sample_batch(np.random.default_rng(0), 1, resolutions=[128]).to_configs()[0]
    items = [Item.op(op) for op in ops] + [Item.subnet(arch)]
    job = agent.JobSettings(agent.TimingSettings(1, 0.0, 3, 0.002), rounds=2, extra_rounds=0)
    summ, secs = measure_items(items, "torch", resolve("cpu", "torch", 1).runner, tmp_path / "j.jsonl", job, tmp_path)
    assert all(summ[it.id].ok and summ[it.id].rounds == 2 for it in items)
    assert summ[Item.subnet(arch).id].ms > max(summ[op.key].ms for op in ops)  # a network vs two head ops


def test_quick_interpolation_is_exact_for_area_linear_latencies() -> None:
    assert pick_resolutions(range(128, 225, 4), 4) == [128, 160, 192, 224]
    assert pick_resolutions(range(128, 225, 4), 3) == [128, 176, 224]
    # a latency that is linear in each slot's input area is recovered exactly between the measured sizes
    truth = {}
    for r in range(128, 225, 4):
        for i, op in enumerate(resolution_ops(SPEC, r)):
            truth[op.key] = 0.01 * (i + 1) + 1e-5 * (i + 3) * op.in_shape[0] * op.in_shape[1]
    measured_res = [128, 176, 224]
    measured = {k: truth[k] for k in enumerate_ops(SPEC, measured_res)}
    guessed = interpolate(SPEC, measured, measured_res, range(128, 225, 4))
    assert set(guessed) | set(measured) == set(enumerate_ops(SPEC))
    assert not set(guessed) & set(measured)
    for k, v in guessed.items():
        assert v == pytest.approx(truth[k], rel=1e-9)


def test_small_real_profile_and_validation(cli, tmp_path: Path) -> None:
    prof_dir, work = tmp_path / "prof", tmp_path / "work"
    r = cli("profile", "cpu", "-r", "128,132", "--quick", "--quick-resolutions", "1", *FAST,
            "--calibration-subnets", "5", "--out", str(prof_dir), "--work", str(work), "--name", "tiny")
    assert r.returncode == 0, r.stderr
    prof = load_profile(prof_dir)
    measured_keys = set(enumerate_ops(SPEC, [132]))
    assert {s.key for s in prof} == set(enumerate_ops(SPEC, [128, 132]))
    assert {s.key for s in prof if s.rounds} == measured_keys
    assert all(s.rounds >= 2 and 0 < s.min_ms <= s.ms and s.n >= 5 for s in prof if s.rounds)
    stem = next(op for op in resolution_ops(SPEC, 132) if op.kind == "Conv")
    block = max(resolution_ops(SPEC, 132), key=lambda op: op.macs)
    assert prof.lookup(block.key).ms > prof.lookup(stem.key).ms * 0.5  # real timings, not placeholders
    meta = prof.meta
    assert meta.backend == "onnxruntime" and meta.threads == 1 and meta.method["quick"]
    assert meta.environment["cpu_model"] and meta.environment["runtime"]["onnxruntime"]
    assert meta.calibration["n_fit"] == 5 and len(meta.calibration["fit_archs"]) == 5
    archs = sample_batch(np.random.default_rng(5), 50, resolutions=[128, 132])
    raw = LUTPredictor(prof).predict(archs)
    cal = CalibratedLUTPredictor(prof).predict(archs)
    assert np.isfinite(raw).all() and np.isfinite(cal).all() and (raw > 0).all()

    out = tmp_path / "val"
    r = cli("validate", str(prof_dir), "--n", "3", "--seed", "3", "--rounds", "2", "--out", str(out),
            "--work", str(work), "--record")
    assert r.returncode == 0, r.stderr
    assert "tiny raw" in r.stdout and "tiny corrected" in r.stdout and "Spearman" in r.stdout
    assert "tiny state-adjusted" in r.stdout and "5 calibration subnets re-measured" in r.stdout  # the anchors
    rows = list(csv.DictReader(open(out / "validation.csv")))
    assert len(rows) == 3
    fit = set(meta.calibration["fit_archs"])
    for row in rows:
        assert float(row["measured_ms"]) > 0 and float(row["raw_ms"]) > 0 and float(row["corrected_ms"]) > 0
        assert int(row["resolution"]) in (128, 132)
    assert (out / "validation.png").stat().st_size > 1000
    assert load_profile(prof_dir).meta.validation["raw"]["n"] == 3
    assert load_profile(prof_dir).meta.validation["state_factor"] > 0
    stamp = "".join(c for c in meta.created if c.isalnum())[:15]
    assert (work / f"validate-seed3-{stamp}.jsonl").exists()  # a re-measured profile gets a fresh journal
    recs = agent.read_results(str(work / "journal.jsonl"))[1]
    nets = {r.id for r in recs if r.id.startswith("subnet:")}
    assert len(nets) == 5 and all(sum(r.id == i for r in recs) >= 8 for i in nets)  # whole subnets: 8 rounds
    assert not fit & {r["arch"] for r in rows}


def test_killed_profile_run_resumes_without_loss_or_duplicates(tmp_path: Path, cache: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "prof"
    args = [sys.executable, "-c", "from ofakit.cli import main; main()", "profile", "cpu", "-r", "132",
            "--rounds", "3", "--extra-rounds", "0", "--min-time", "0.005", "--calibration-subnets", "0",
            "--out", str(out), "--work", str(work), "--name", "resume"]
    env = {**os.environ, "OFAKIT_CACHE_DIR": str(cache)}
    journal = work / "journal.jsonl"
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(agent.read_results(str(journal))[1]) < 40:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the profiler and its timing worker, mid-run
    proc.wait()
    first = agent.read_results(str(journal))[1]
    assert 40 <= len(first) < 96 * 3 and not out.exists()
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    results = agent.read_results(str(journal))[1]
    main_rounds = [(x.id, x.round) for x in results if x.round < 3]
    assert len(main_rounds) == len(set(main_rounds)) == 96 * 3
    assert len(results) == len({(x.id, x.round) for x in results})
    prof = load_profile(out)
    assert len(prof) == 96 and all(s.rounds == 3 for s in prof)


def test_calibration_subnets_span_the_sizes_of_random_subnets() -> None:
    from ofakit.ofa_core.ops import subnet_macs
    from ofakit.profiler.pipeline import ProfileRequest

    req = ProfileRequest(calibration_subnets=12, resolutions=(128, 176, 224))
    cal = req.calibration_archs()
    assert len(set(cal)) == 12 and cal == req.calibration_archs()  # distinct, reproducible
    macs = [subnet_macs(a) for a in cal]
    assert macs == sorted(macs)
    rand = [subnet_macs(a) for a in sample_batch(np.random.default_rng(9), 300, resolutions=[128, 176, 224])
            .to_configs()]
    # the pool's extremes are included: smaller / larger than all but a few of 300 random subnets
    assert np.mean(np.array(rand) < macs[0]) < 0.02 and np.mean(np.array(rand) > macs[-1]) < 0.02
    assert ProfileRequest(calibration_subnets=0).calibration_archs() == []
