"""The CUDA backends (torch-cuda, onnxruntime-cuda), the GPU profiling script and the HELP rank check.

On a machine without CUDA (the development machines, CI) the backends must say why they cannot run, in one line,
and the CLI and bench/gpu_profile.sh must stop cleanly; the timing loops, option parsing, loader and the whole
profiling script (dry run with the torch CPU backend) run for real. Tests that need a GPU are skipped with
"needs CUDA" where there is none.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from ofakit.ofa_core.errors import UserError
from ofakit.profiler.agent import ofakit_agent as agent
from ofakit.profiler.backends import get_backend, list_backends
from ofakit.profiler.backends.torch_cuda import (ChainWindow, CudaOptions, EagerRun, WallMark, cuda_unavailable, item_timer,
                                          load, prepare, settled, synced_window, time_item, timed_window,
                                          wall_timer, warm_up)
from ofakit.profiler.items import Item

ROOT = Path(__file__).resolve().parents[1]
HELP = ROOT.parent / "shared" / "data" / "help_ofa_gpu_latency" / "ofa_subnets_gpu_latency.jsonl"


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


needs_cuda = pytest.mark.skipif(not _has_cuda(), reason="needs CUDA")
no_cuda = pytest.mark.skipif(_has_cuda(), reason="checks the behaviour without CUDA")


def _bench(name: str):
    """Import a bench/ script as a module."""
    import importlib

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


# --- registry and options ----------------------------------------------------------------------------------------

def test_backends_registered_with_options():
    assert {"torch-cuda", "onnxruntime-cuda"} <= set(list_backends())
    from ofakit.profiler.backends import _with_options

    b = _with_options("torch-cuda-graph-b64-bf16-cl")
    assert b.name == "torch-cuda-graph-b64-bf16-cl" and b.device == "gpu"
    assert b.options == CudaOptions("graph", 64, "bf16", True, False)
    assert b.worker_argv(1)[-2:] == ["--options", "graph-b64-bf16-cl"]
    d = b.describe()
    assert (d["mode"], d["batch"], d["backend_options"]["channels_last"]) == ("graph", 64, True)
    assert _with_options("onnxruntime-cuda-b8").batch == 8
    assert _with_options("torch-nothing") is None  # the CPU backend takes no options: an unknown name


@pytest.mark.parametrize("text, expected", [
    ("", CudaOptions()),
    ("graph", CudaOptions(mode="graph")),
    ("b64-graph", CudaOptions(mode="graph", batch=64)),
    ("eager-b1-fp16-cl-bench", CudaOptions("eager", 1, "fp16", True, True)),
])
def test_options_parse_and_canonical_suffix(text, expected):
    opts = CudaOptions.parse(text)
    assert opts == expected
    assert CudaOptions.parse(opts.suffix) == opts


@pytest.mark.parametrize("text, msg", [("graph-eager", "given twice"), ("b0", "unknown option"),
                                       ("fp64", "unknown option"), ("b64-b1", "given twice")])
def test_bad_options_are_one_line_user_errors(text, msg):
    with pytest.raises(UserError, match=msg) as ei:
        get_backend(f"torch-cuda-{text}")
    assert "\n" not in str(ei.value)


def test_onnxruntime_cuda_takes_only_a_batch():
    with pytest.raises(UserError, match="only a batch option"):
        get_backend("onnxruntime-cuda-graph")


@no_cuda
def test_torch_cuda_unavailable_says_why_in_one_line():
    why = cuda_unavailable()
    assert why and "\n" not in why and ("CUDA" in why or "GPU" in why)
    with pytest.raises(UserError, match="cannot run here") as ei:
        get_backend("torch-cuda-graph-b64")
    assert "\n" not in str(ei.value)


def test_onnxruntime_cuda_availability_follows_the_installed_providers():
    import onnxruntime as ort

    from ofakit.profiler.backends.onnxruntime_cuda import ort_cuda_unavailable

    why = ort_cuda_unavailable()
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert why is None
    else:
        assert "CUDAExecutionProvider" in why and "onnxruntime-gpu" in why and "\n" not in why


@no_cuda
@pytest.mark.parametrize("argv", [["profile", "gpu", "--backend", "torch-cuda"],
                                  ["profile", "gpu", "--backend", "torch-cuda-graph-b64"]])
def test_cli_profile_gpu_without_cuda_is_one_line_exit_2(argv, capsys):
    from ofakit.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "torch-cuda" in err and "Traceback" not in err


@pytest.mark.parametrize("options, needs_no_cuda", [("nope", False), ("graph-b64", True)])
def test_cuda_worker_refuses_to_start_in_one_line(options, needs_no_cuda):
    if needs_no_cuda and _has_cuda():
        pytest.skip("checks the behaviour without CUDA")
    p = subprocess.run([sys.executable, "-m", "ofakit.profiler.backends.torch_cuda", "--options", options], cwd=ROOT,
                       env=_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1 and "torch_cuda worker" in p.stderr


def test_gpu_device_refuses_a_cpu_backend():
    from ofakit.profiler.devices import resolve

    with pytest.raises(UserError, match="measures on the cpu"):
        resolve("gpu", "onnxruntime", 1)


# --- timing loops (pure: any timer) -------------------------------------------------------------------------------

@pytest.mark.parametrize("medians, expected", [
    ([1.0], False),                 # one window proves nothing
    ([1.0, 0.97], False),           # dropped 3%: still warming up
    ([1.0, 0.985], True),           # dropped 1.5%: settled
    ([1.0, 1.2], True),             # rose: settled (noise, not warm-up)
    ([5.0, 3.0, 2.0, 1.99], True),
])
def test_settled(medians, expected):
    assert settled(medians, 0.02) is expected


def test_warm_up_stops_when_the_median_stops_dropping():
    seq = iter([10.0, 8.0, 6.0, 5.0, 4.95, 4.9, 1.0])  # clocks ramping, then flat
    assert warm_up(lambda: next(seq), tol=0.02) == [10.0, 8.0, 6.0, 5.0, 4.95]


def test_warm_up_is_bounded():
    seq = iter(range(100, 0, -1))  # keeps dropping by > 2%... for a while
    meds = warm_up(lambda: float(next(seq)) ** 3, tol=0.02, max_windows=5)
    assert len(meds) == 5


def test_timed_window_counts_runs_and_time():
    calls = []
    fake = lambda fn: (fn(), 0.5)[1]  # noqa: E731 - a timer that reports 0.5 s per call
    out = timed_window(lambda: calls.append(1), fake, min_runs=7, min_s=0.0)
    assert out == [0.5] * 7 and len(calls) == 7
    assert len(timed_window(lambda: None, fake, min_runs=1, min_s=10.0, max_runs=4)) == 4
    t = timed_window(lambda: sum(range(1000)), wall_timer, min_runs=3, min_s=0.02)
    assert len(t) >= 3 and sum(t) > 0


def test_time_item_warms_up_before_timing():
    state = {"n": 0}

    def timer(fn):  # a run gets faster for its first 20 calls (a cold GPU), then stays at 1 ms
        fn()
        state["n"] += 1
        return 0.001 * (1 + max(0, 20 - state["n"]))

    samples = time_item(lambda: None, agent.TimingSettings(warmup_runs=4, warmup_s=0.0, min_runs=10, min_s=0.0),
                        synced_window(timer))
    assert len(samples) == 10 and max(samples) == pytest.approx(0.001)
    assert state["n"] >= 30


def test_chain_window_marks_between_back_to_back_runs():
    calls = []
    win = ChainWindow(WallMark)
    out = win(lambda: calls.append(time.sleep(0.001)), min_runs=5, min_s=0.0)
    assert len(out) == len(calls) == 5 and len(win.marks) == 6
    assert all(0.0009 < s < 0.5 for s in out)
    out2 = win(lambda: None, min_runs=3, min_s=0.0, max_runs=3)
    assert len(out2) == 3 and len(win.marks) == 6  # marks are reused


def test_item_timer_picks_the_window_per_kind_and_divides_by_repeat():
    from ofakit.profiler.items import OP, SUBNET

    timing = agent.TimingSettings(warmup_runs=1, warmup_s=0.0, min_runs=4, min_s=0.0)
    marks = []

    def new_mark():
        marks.append(WallMark())
        return marks[-1]

    op_run, net_run = EagerRun(None, None, OP), EagerRun(None, None, SUBNET)
    op_run.module = net_run.module = lambda x: time.sleep(0.002)
    eager = item_timer(CudaOptions(mode="eager"), wall_timer, new_mark)
    assert len(eager(op_run, timing)) == 4 and marks        # eager op: chained
    n = len(marks)
    assert len(eager(net_run, timing)) == 4 and len(marks) == n  # subnet: one by one
    assert len(item_timer(CudaOptions(sync_ops=True), wall_timer, new_mark)(op_run, timing)) == 4
    assert len(marks) == n                                    # option sync: ops one by one too
    op_run.repeat = 4                                         # a graph of 4 forwards: per-forward time
    graph = item_timer(CudaOptions(mode="graph"), wall_timer, new_mark)
    assert 0.0003 < min(graph(op_run, timing)) < 0.0015 and len(marks) == n


# --- loader and the agent's timer hook, on the CPU ---------------------------------------------------------------

def _item_file(tmp_path: Path, item: Item) -> str:
    path = tmp_path / "item.json"
    path.write_text(json.dumps({"kind": item.kind, "spec": item.spec}))
    return str(path)


def _first_block():
    from ofakit.ofa_core.ops import BLOCK, resolution_ops
    from ofakit.ofa_core.space import space_for_width

    return next(op for op in resolution_ops(space_for_width(1.0), 160) if op.kind == BLOCK and op.se)


def test_prepare_batch_dtype_channels_last_and_folded_bn():
    import torch

    op = _first_block()
    module, x = prepare(Item.op(op), CudaOptions(batch=3, dtype="bf16", channels_last=True), "cpu")
    h, w, c = op.in_shape
    assert x.shape == (3, c, h, w) and x.dtype == torch.bfloat16
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())
    with torch.inference_mode():
        y = EagerRun(module, x)()
    assert y.shape == (3, op.out_shape[2], op.out_shape[0], op.out_shape[1])


def test_agent_worker_protocol_with_the_cuda_loader_on_cpu(tmp_path):
    """The worker's request handling (loader + timer hook) end to end, eager mode on the CPU."""
    import torch

    path = _item_file(tmp_path, Item.op(_first_block()))
    loader = functools.partial(load, options=CudaOptions(batch=2), device="cpu")
    timing = {"warmup_runs": 2, "warmup_s": 0.0, "min_runs": 5, "min_s": 0.0}
    with torch.inference_mode():
        rep = agent.handle(loader, 1, {"model": path, "timing": timing}, functools.partial(time_item))
    assert rep["error"] == "OK" and rep["n"] == 5 and rep["median_ms"] > 0
    (tmp_path / "bad.json").write_text("{not json")
    bad = agent.handle(loader, 1, {"model": str(tmp_path / "bad.json"), "timing": timing}, time_item)
    assert bad["error"] == "BAD_MODEL"


def test_onnxruntime_cuda_worker_times_on_the_wall_clock():
    from ofakit.profiler.backends.onnxruntime_cuda import wall_time_runs

    # sleeping costs no CPU time: a thread clock would say ~0
    t = wall_time_runs(lambda: time.sleep(0.002), agent.TimingSettings(warmup_runs=1, warmup_s=0.0, min_runs=3,
                                                                         min_s=0.0, clock="thread"))
    assert len(t) >= 3 and min(t) >= 0.0015


# --- bench/gpu_profile.sh and bench/gpu_profile.py ------------------------------------------------------------------

@no_cuda
def test_gpu_profile_script_without_cuda_says_so_and_stops(tmp_path):
    p = subprocess.run(["bash", str(ROOT / "bench" / "gpu_profile.sh"), str(tmp_path / "out")],
                       capture_output=True, text=True, env={**_env(), "PYTHON": sys.executable}, timeout=120)
    assert p.returncode == 2
    lines = (p.stdout + p.stderr).strip().splitlines()
    assert len(lines) == 1 and "no usable CUDA GPU" in lines[0], lines
    assert not (tmp_path / "out" / "summary.json").exists()


def test_gpu_profile_names():
    gp = _bench("gpu_profile")
    assert gp.gpu_slug("NVIDIA H100 80GB HBM3") == "h100"
    assert gp.gpu_slug("NVIDIA H200") == "h200"
    assert gp.gpu_slug("Tesla V100-SXM2-16GB") == "v100"
    cfgs = gp.make_configs(["graph-b64", "ort-b1"], False, "h100")
    assert [(c.name, c.backend, c.device) for c in cfgs] == [
        ("h100-torch-cuda-graph-b64", "torch-cuda-graph-b64", "gpu"),
        ("h100-onnxruntime-cuda-b1", "onnxruntime-cuda-b1", "gpu")]
    assert all(c.backend == "torch" and c.name.startswith("dryrun-") for c in gp.make_configs(["graph-b1"], True, "x"))
    b = gp.Budget(100.0)
    assert b.estimate("graph-b1", 10, 2) == pytest.approx(10 * 0.06 + 2 * 0.4 + 25.0)


def test_profiling_path_imports_without_packages_the_gpu_machine_lacks():
    """The GPU machine's Python has no paramiko or skops: the profiling path must not need them."""
    code = ("import sys; sys.modules.update(paramiko=None, skops=None)\n"
            "sys.path.insert(0, 'bench'); import gpu_profile\n"
            "import ofakit.cli, ofakit.workflows, ofakit.validation, profiler.pipeline, predictors.lut\n"
            "from profiler.backends import list_backends; list_backends()\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]


@pytest.mark.slow
def test_gpu_profile_dry_run_on_cpu(tmp_path):
    """The whole script with the torch CPU backend: phase A (quick), phase B (full), validation, packing, resume."""
    out, packdir = tmp_path / "out", tmp_path / "pack"
    cmd = ["bash", str(ROOT / "bench" / "gpu_profile.sh"), str(out), str(packdir), "--configs", "eager-b1",
           "--resolutions", "216,220,224", "--quick-resolutions", "2", "--calibration", "5", "--n-validate", "4"]
    env = {**_env(), "PYTHON": sys.executable, "GPU_PROFILE_DRY_RUN": "cpu", "OFAKIT_PROFILE_DIR": str(tmp_path)}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    name = "dryrun-cpu-torch-eager-b1"
    summary = json.loads((out / "summary.json").read_text())
    assert [(s["phase"], s["status"]) for s in summary["steps"]] == [("A (quick)", "done"), ("B (full)", "done")]
    assert summary["profiles"][name]["measured_resolutions"] == [216, 220, 224]
    meta = json.loads((out / name / "profile.json").read_text())
    assert (meta["mode"], meta["batch"], meta["method"]["quick"]) == ("eager", 1, False)
    assert meta["calibration"]["n_fit"] == 5 and meta["validation"]["n"] == 4
    rows = (out / f"{name}-validation.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4
    assert (out / f"{name}-validation.png").stat().st_size > 1000
    assert name in p.stdout and "raw ±10%" in p.stdout  # the summary table
    packed = sorted(x.name for x in packdir.iterdir())
    assert packed == sorted(["gpu_profiles.tar.gz", "summary.json", "gpu_profile.log", f"{name}-validation.png"])
    with tarfile.open(packdir / "gpu_profiles.tar.gz") as tar:
        names = set(tar.getnames())
    assert {f"gpu_profiles/{name}/lut.csv", f"gpu_profiles/{name}/profile.json",
            f"gpu_profiles/work/{name}/journal.jsonl"} <= names
    assert not any("/cache" in n for n in names)

    # a second run resumes from the journals: nothing is measured again
    p2 = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p2.returncode == 0 and "0 ops + 0 subnets to measure" in p2.stdout, p2.stdout[-2000:]


# --- bench/gpu_help_rank.py ------------------------------------------------------------------------------------------

def _help_configs():
    return [f"{g}_{b}" for g in ("2080ti", "titan_rtx", "titan_xp", "v100") for b in (1, 32, 64)]


def test_help_rank_of_a_macs_profile_equals_the_macs_ranker(tmp_path, capsys):
    """A profile whose op latencies are the ops' MACs must rank the HELP subnets exactly like MACs do; a profile
    that was not measured on a GPU is labelled so."""
    from scipy.stats import spearmanr

    from ofakit.device_profiles import OpStats, Profile, ProfileMeta
    from ofakit.ofa_core.ops import enumerate_ops, subnet_macs
    from ofakit.ofa_core.space import space_for_width

    hr = _bench("gpu_help_rank")
    prof = Profile(ProfileMeta(name="macs", device="cpu", source="synthetic", resolutions=list(range(160, 225, 4))),
                   [OpStats(key=k, ms=op.macs / 1e6) for k, op in enumerate_ops(space_for_width(1.0)).items()])
    prof.save(tmp_path / "macs")
    assert hr.main([str(tmp_path / "macs"), "--json", str(tmp_path / "rank.json")]) == 0
    assert "not a measured GPU profile" in capsys.readouterr().out
    res = json.loads((tmp_path / "rank.json").read_text())
    archs, lat = hr.load_help(HELP)
    keep = np.array([a.r >= 160 for a in archs])
    assert res["n_total"] == 5000 and res["n"] == keep.sum() and set(res["configs"]) == set(_help_configs())
    for c, row in res["configs"].items():
        assert row["profile raw"]["rho"] == pytest.approx(row["MACs"]["rho"], abs=1e-5)
        assert row["profile raw"]["tau"] == pytest.approx(row["MACs"]["tau"], abs=1e-5)
        assert row["best other GPU"]["config"] != c
    macs = [subnet_macs(a) for a, k in zip(archs, keep) if k][:500]
    direct = spearmanr(lat["v100_64"][keep][:500], macs).statistic
    sub = hr.evaluate(prof, [a for a, k in zip(archs, keep) if k][:500],
                      {c: v[keep][:500] for c, v in lat.items()})
    assert sub["configs"]["v100_64"]["MACs"]["rho"] == pytest.approx(direct, abs=1e-6)


def test_help_rank_cli_errors_are_one_line(tmp_path, capsys):
    hr = _bench("gpu_help_rank")
    assert hr.main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no device profile" in err


# --- on a GPU ---------------------------------------------------------------------------------------------------------

@needs_cuda
def test_graph_replay_matches_eager_and_events_time_it():
    import torch

    from ofakit.ofa_core.space import sample_arch
    from ofakit.profiler.backends.torch_cuda import EventTimer, GraphRun

    arch = sample_arch(np.random.default_rng(0))
    with torch.inference_mode():
        module, x = prepare(Item.subnet(arch), CudaOptions(mode="graph", batch=2))
        ref = EagerRun(module, x)().clone()
        g = GraphRun(module, x)
        g()
        torch.cuda.synchronize()
        assert torch.allclose(g.out, ref, rtol=1e-2, atol=1e-3)
        t = time_item(g, agent.TimingSettings(warmup_runs=3, warmup_s=0.0, min_runs=10, min_s=0.0),
                      synced_window(EventTimer()))
    assert len(t) == 10 and 0 < min(t) < 0.1


@needs_cuda
@pytest.mark.parametrize("backend", ["torch-cuda-eager-b1", "torch-cuda-graph-b64"])
def test_local_runner_measures_ops_on_the_gpu(tmp_path, backend):
    from ofakit.ofa_core.ops import resolution_ops
    from ofakit.ofa_core.space import space_for_width
    from ofakit.profiler.builder import Builder
    from ofakit.profiler.runner import LocalRunner

    bk = get_backend(backend)
    items = [Item.op(op) for op in resolution_ops(space_for_width(1.0), 224)[:3]]
    built = Builder(bk, tmp_path, jobs=1).build(items)
    job = agent.JobSettings(agent.TimingSettings(warmup_runs=3, warmup_s=0.0, min_runs=10, min_s=0.005),
                            rounds=1, extra_rounds=0)
    res = LocalRunner(bk).measure({i: b.path for i, b in built.items()}, tmp_path / "j.jsonl", job)
    assert all(s.ok and s.ms > 0 for s in res.values()), res
