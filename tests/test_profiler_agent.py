"""The on-board agent: one file, stdlib + numpy + runtime only, real onnxruntime timings, resume after SIGKILL,
per-item timeouts and crashes recorded as data while the run goes on."""
from __future__ import annotations

import ast
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ofakit.profiler.agent import AGENT_FILE
from ofakit.profiler.agent import ofakit_agent as agent

PY = sys.executable
RUNTIMES = {"numpy", "onnxruntime", "ai_edge_litert", "tflite_runtime"}


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.opset_import[0].version = 17
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def relu_model(path: Path, n: int = 64) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])
    return _save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])), path)


def slow_model(path: Path, n: int = 4096) -> Path:
    """A (n x n) @ (n x n) matmul of two inputs: seconds per run on one core, a tiny file."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])
    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "g", [a, b], [y])
    return _save(helper.make_model(g), path)


def relu_tflite(path: Path, n: int = 64) -> Path:
    """A one-op (RELU) TFLite flatbuffer written with the schema shipped in ai_edge_litert."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    def tensor(name: str) -> fb.TensorT:
        t = fb.TensorT()
        t.shape, t.type, t.buffer, t.name = [1, n], fb.TensorType.FLOAT32, 0, name
        return t
    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.RELU
    code.version = 1
    op = fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    sg = fb.SubGraphT()
    sg.tensors, sg.inputs, sg.outputs, sg.operators, sg.name = [tensor("x"), tensor("y")], [0], [1], [op], "main"
    m = fb.ModelT()
    m.version, m.subgraphs, m.operatorCodes, m.buffers = 3, [sg], [code], [fb.BufferT()]
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("models")
    for i, n in enumerate((16, 64, 256, 1024, 4096, 16384)):
        relu_model(d / f"relu{i}.onnx", n)
    (d / "bad.onnx").write_bytes(b"not an onnx file")
    slow_model(d / "slow.onnx")
    return d


def ops_file(path: Path, names: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": f"item-{n}", "model": f"{n}.onnx"}) + "\n" for n in names))
    return path


FAST = ["--warmup-runs", "1", "--warmup-time", "0", "--min-runs", "3", "--min-time", "0.002"]


def run_agent(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([PY, str(AGENT_FILE), *args], capture_output=True, text=True, timeout=120, **kw)


def test_agent_source_is_one_py37_file_importing_only_stdlib_numpy_runtime() -> None:
    tree = ast.parse(AGENT_FILE.read_text(), feature_version=(3, 7))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "the agent must not import relative to a package"
            names.add(node.module.split(".")[0])
    foreign = names - set(sys.stdlib_module_names) - RUNTIMES
    assert not foreign, f"agent imports {foreign}"


def test_agent_loads_nothing_beyond_numpy_and_runtime_at_run_time(models: Path, tmp_path: Path) -> None:
    # Import numpy + onnxruntime first (their own dependencies are theirs), then run the agent end to end:
    # every module loaded after that must come from the standard library.
    code = textwrap.dedent(f"""
        import json, sys
        import numpy, onnxruntime
        before = set(sys.modules)
        sys.path.insert(0, {str(AGENT_FILE.parent)!r})
        import ofakit_agent
        rc = ofakit_agent.main(["measure", "--models", {str(models)!r}, "--ops", {str(tmp_path / 'ops.jsonl')!r},
                                "--out", {str(tmp_path / 'r.jsonl')!r}, "--backend", "onnxruntime", "--rounds", "1",
                                "--extra-rounds", "0", "--quiet"] + {FAST!r})
        ofakit_agent.environment("onnxruntime", 1)
        new = sorted({{m.split(".")[0] for m in set(sys.modules) - before}})
        print(json.dumps({{"rc": rc, "new": new}}))
    """)
    ops_file(tmp_path / "ops.jsonl", ["relu0"])
    out = subprocess.run([PY, "-I", "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["rc"] == 0
    foreign = set(res["new"]) - set(sys.stdlib_module_names) - RUNTIMES - {"ofakit_agent"}
    assert not foreign, f"the agent loaded {foreign}"


def test_cli_measures_real_sessions_and_summarizes(models: Path, tmp_path: Path) -> None:
    ops = ops_file(tmp_path / "ops.jsonl", ["relu1", "relu4", "bad"])
    out = tmp_path / "res.jsonl"
    r = run_agent("measure", "--models", str(models), "--ops", str(ops), "--out", str(out), "--backend",
                  "onnxruntime", "--rounds", "2", "--extra-rounds", "0", *FAST)
    assert r.returncode == 0, r.stderr
    assert "[1/6] round" in r.stderr  # the progress line format the SSH runner parses
    header, results = agent.read_results(str(out))
    assert header["backend"] == "onnxruntime" and header["version"] == agent.RECORD_VERSION
    assert sorted((x.id, x.round) for x in results) == sorted(
        (f"item-{n}", k) for n in ("relu1", "relu4", "bad") for k in (0, 1))
    bad = [x for x in results if x.id == "item-bad"]
    assert all(x.error == "BAD_MODEL" and x.msg for x in bad)
    good = [x for x in results if x.ok]
    assert len(good) == 4 and all(x.n >= 3 and 0 < x.min_ms <= x.median_ms and x.load_ms > 0 for x in good)
    assert all(x.clock == "thread" and x.wall_median_ms > 0 for x in good)  # one thread: CPU time of the caller
    s = run_agent("summary", "--out", str(out))
    summ = {d["id"]: d for d in map(json.loads, s.stdout.splitlines())}
    assert summ["item-bad"]["error"] == "BAD_MODEL"
    big, small = summ["item-relu4"], summ["item-relu1"]
    assert big["rounds"] == small["rounds"] == 2
    assert big["ms"] == min(x.median_ms for x in good if x.id == "item-relu4")
    env = json.loads(run_agent("env", "--backend", "onnxruntime").stdout)
    assert env["cores"] >= 1 and env["runtime"]["onnxruntime"] and env["threads"] == 1


def test_cli_measures_tflite_with_xnnpack(tmp_path: Path) -> None:
    relu_tflite(tmp_path / "relu.tflite", 256)
    (tmp_path / "ops.jsonl").write_text(json.dumps({"id": "relu", "model": "relu.tflite"}) + "\n")
    r = run_agent("measure", "--models", str(tmp_path), "--ops", str(tmp_path / "ops.jsonl"), "--out",
                  str(tmp_path / "r.jsonl"), "--backend", "tflite", "--rounds", "2", "--extra-rounds", "0", *FAST)
    assert r.returncode == 0, r.stderr
    results = agent.read_results(str(tmp_path / "r.jsonl"))[1]
    assert len(results) == 2 and all(x.ok and x.n >= 3 and x.median_ms > 0 for x in results), results
    env = json.loads(run_agent("env", "--backend", "tflite").stdout)
    assert env["runtime"]  # ai_edge_litert (or tflite_runtime on a board)


def test_rerun_with_other_timing_is_refused(models: Path, tmp_path: Path) -> None:
    ops = ops_file(tmp_path / "ops.jsonl", ["relu0"])
    out = tmp_path / "res.jsonl"
    base = ["measure", "--models", str(models), "--ops", str(ops), "--out", str(out), "--backend", "onnxruntime",
            "--rounds", "1", "--extra-rounds", "0", "--quiet"]
    assert run_agent(*base, *FAST).returncode == 0
    r = run_agent(*base, "--min-runs", "7")
    assert r.returncode == 3 and "measured with timing" in r.stderr


def test_resume_after_sigkill_loses_and_duplicates_nothing(models: Path, tmp_path: Path) -> None:
    names = [f"relu{i}" for i in range(6)]
    ops = ops_file(tmp_path / "ops.jsonl", names)
    out = tmp_path / "res.jsonl"
    args = [PY, str(AGENT_FILE), "measure", "--models", str(models), "--ops", str(ops), "--out", str(out),
            "--backend", "onnxruntime", "--rounds", "4", "--extra-rounds", "0", "--quiet", "--warmup-runs", "1",
            "--min-runs", "3", "--min-time", "0.05"]
    proc = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(agent.read_results(str(out))[1]) >= 5:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = agent.read_results(str(out))[1]
    assert 5 <= len(first) < 24, "killed too late to test resuming"
    with open(out, "a") as f:
        f.write('{"type": "result", "id": "item-re')  # a torn line, as if killed mid-write
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    results = agent.read_results(str(out))[1]
    pairs = [(x.id, x.round) for x in results]
    assert sorted(pairs) == sorted((f"item-{n}", k) for n in names for k in range(4))  # nothing lost or doubled
    assert [(x.id, x.round, x.median_ms) for x in results[:len(first)]] == [
        (x.id, x.round, x.median_ms) for x in first]  # the first run's records are kept as they were
    assert all(x.ok for x in results)


def test_hang_and_crash_are_recorded_and_the_run_goes_on(models: Path, tmp_path: Path) -> None:
    # A real worker subprocess whose loader dies on one file (a runtime crash): the agent's loop must record it,
    # restart the worker and go on; the (n x n) matmul runs for seconds and must hit the 2.5 s per-item timeout.
    script = tmp_path / "crashy_worker.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(AGENT_FILE.parent)!r})
        import ofakit_agent as a
        def load(path, threads):
            if path.endswith("relu2.onnx"):
                os._exit(7)
            return a.load_onnxruntime(path, threads)
        a.serve(load, 1)
    """))
    items = [(f"item-{n}", str(models / f"{n}.onnx")) for n in ("relu0", "relu2", "slow", "relu3")]
    job = agent.JobSettings(agent.TimingSettings(1, 0.0, 3, 0.002), rounds=1, extra_rounds=0, timeout_s=2.5)
    out = tmp_path / "res.jsonl"
    t0 = time.monotonic()
    summ = agent.measure(items, str(out), [PY, str(script)], job, agent.make_header("onnxruntime", 1, job))
    assert time.monotonic() - t0 < 60
    assert summ["item-relu2"].error == "RUNTIME_ERROR" and "exit code 7" in summ["item-relu2"].msg
    assert summ["item-slow"].error == "RUN_TIMEOUT"
    assert summ["item-relu0"].ok and summ["item-relu3"].ok
    # a rerun skips the recorded errors; --retry-errors measures them again
    n_before = len(agent.read_results(str(out))[1])
    agent.measure(items, str(out), [PY, str(script)], job, agent.make_header("onnxruntime", 1, job))
    assert len(agent.read_results(str(out))[1]) == n_before


def test_summary_takes_min_of_round_medians_and_flags_unstable_items() -> None:
    recs = [agent.MeasureResult("a", k, median_ms=m, mean_ms=m, std_ms=0.0, iqr_ms=0.0, cv=0.0, min_ms=m * 0.9, n=5)
            for k, m in enumerate([1.4, 1.0, 1.02, 1.45])]
    recs.append(agent.MeasureResult("a", 1, median_ms=1.01, mean_ms=1.01, std_ms=0.0, iqr_ms=0.0, cv=0.0,
                                    min_ms=0.95, n=5))  # a later record of the same (id, round) replaces it
    s = agent.summarize(recs)["a"]
    assert s.ms == 1.01 and s.rounds == 4 and s.min_ms == pytest.approx(1.02 * 0.9)
    assert s.spread == pytest.approx(1.02 / 1.01 - 1)
    assert s.median_ms == pytest.approx(np.median([1.4, 1.01, 1.02, 1.45]))
    job = agent.JobSettings(spread_threshold=0.05, cv_threshold=0.1)
    assert not agent.unstable(s, job)
    assert agent.unstable(agent.summarize(recs[1:2] + recs[3:4])["a"], job)  # 1.0 vs 1.45 disagree
    assert agent.unstable(agent.summarize(recs[:1])["a"], job)  # one round alone is never trusted
    noisy = agent.MeasureResult("b", 0, median_ms=1.0, mean_ms=1.0, std_ms=0.5, iqr_ms=0.4, cv=0.5, min_ms=0.5, n=5)
    assert agent.unstable(agent.summarize([noisy, agent.MeasureResult(**{**noisy.__dict__, "round": 1})])["b"], job)


def test_unstable_items_get_rounds_one_at_a_time_until_they_agree(tmp_path: Path) -> None:
    # A real worker subprocess whose "model" is a busy loop: item "steady" always takes 1 ms of CPU, item "jumpy"
    # takes 1, 2, 1.6 then 1.05 ms in successive rounds, so only it gets extra rounds, and only until its two
    # best rounds agree within 10% (round 3), not all 5 allowed.
    script = tmp_path / "busy_worker.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(AGENT_FILE.parent)!r})
        import ofakit_agent as a
        plan = {{"steady": [1.0] * 9, "jumpy": [1.0, 2.0, 1.6, 1.05, 3.0, 3.0, 3.0, 3.0]}}
        def load(path, threads):
            ms = plan[path].pop(0) / 1e3
            def run():
                end = time.thread_time() + ms
                while time.thread_time() < end:
                    pass
            return run
        a.serve(load, 1)
    """))
    items = [("steady", "steady"), ("jumpy", "jumpy")]
    job = agent.JobSettings(agent.TimingSettings(1, 0.0, 5, 0.005), rounds=2, extra_rounds=5, cv_threshold=0.5,
                            spread_threshold=0.10)
    out = tmp_path / "res.jsonl"
    summ = agent.measure(items, str(out), [PY, str(script)], job, agent.make_header("busy", 1, job))
    rounds = {i: sorted(r.round for r in agent.read_results(str(out))[1] if r.id == i) for i, _ in items}
    assert rounds == {"steady": [0, 1], "jumpy": [0, 1, 2, 3]}
    assert summ["jumpy"].ms == pytest.approx(1.0, rel=0.15) and summ["jumpy"].spread < 0.10


def test_round_plan_spreads_the_extra_whole_network_rounds_over_the_passes() -> None:
    ids = ["a", "b", "subnet:x"]
    plan = agent.round_plan(ids, agent.JobSettings(rounds=2, subnet_rounds=5))
    assert plan == [[(0, ids), (2, ["subnet:x"]), (4, ["subnet:x"])], [(1, ids), (3, ["subnet:x"])]]
    assert agent.round_plan(ids, agent.JobSettings(rounds=3)) == [[(k, ids)] for k in range(3)]
    assert agent.round_plan(["a"], agent.JobSettings(rounds=2, subnet_rounds=6)) == [[(0, ["a"])], [(1, ["a"])]]


def test_whole_networks_get_more_rounds_in_the_same_passes_and_resume(models: Path, tmp_path: Path) -> None:
    items = [("op", str(models / "relu0.onnx")), ("subnet:net", str(models / "relu1.onnx"))]
    job = agent.JobSettings(agent.TimingSettings(1, 0.0, 3, 0.002), rounds=2, extra_rounds=0, subnet_rounds=5)
    out = tmp_path / "res.jsonl"
    argv = agent.worker_argv("onnxruntime", 1)
    summ = agent.measure(items, str(out), argv, job, agent.make_header("onnxruntime", 1, job))
    recs = agent.read_results(str(out))[1]
    rounds = {i: sorted(r.round for r in recs if r.id == i) for i, _ in items}
    assert rounds == {"op": [0, 1], "subnet:net": [0, 1, 2, 3, 4]}
    assert summ["subnet:net"].rounds == 5 and summ["op"].rounds == 2
    when = {(r.id, r.round): r.time for r in recs}
    assert when[("subnet:net", 4)] < when[("op", 1)]  # round 4 is measured in the first pass, not after it all
    agent.measure(items, str(out), argv, job, agent.make_header("onnxruntime", 1, job))
    assert len(agent.read_results(str(out))[1]) == len(recs)  # resumed: nothing re-measured
