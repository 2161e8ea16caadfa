"""Profiling boards over SSH against real OpenSSH servers on 127.0.0.1 whose "board" Python is this venv's (or a
bare venv holding only numpy + onnxruntime): real uploads, the real agent, real onnxruntime timings."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ofakit.cli import main
from ofakit.profiler.agent import ofakit_agent as agent
from ofakit.profiler.backends import get_backend
from ofakit.profiler.builder import Builder
from ofakit.profiler.items import Item
from ofakit.profiler.pipeline import ProfileRequest, profile_device
from ofakit.profiler.remote.fleet import request_items
from ofakit.profiler.remote.inventory import load_inventory
from ofakit.profiler.remote.runner import SSHRunner, merge_journals
from ofakit.profiler.remote.ssh import RemoteError, ssh_options
from ofakit.ofa_core.ops import resolution_ops
from ofakit.ofa_core.space import space_for_width
from sshd import SKIP_REASON, SSHServer, inventory_text, ssh_env, sshd_available, sshd_server, trust  # noqa: F401

R = 32  # tiny feature maps: every op times in well under a millisecond
FAST = ["--resolutions", str(R), "--rounds", "1", "--calibration-subnets", "0", "--min-time", "0.002"]


def fast_job(rounds: int = 2, timeout: float = 20.0) -> agent.JobSettings:
    return agent.JobSettings(agent.TimingSettings(warmup_runs=1, warmup_s=0.0, min_runs=3, min_s=0.002),
                             rounds=rounds, extra_rounds=0, timeout_s=timeout)


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory) -> Path:
    """Op models of one small profile (every op at r=32) and a few r=40 ops, built once for this module."""
    cache = tmp_path_factory.mktemp("cache")
    req = ProfileRequest(device="cpu", resolutions=(R,), calibration_subnets=0)
    extra = [Item.op(op) for op in resolution_ops(space_for_width(1.0), 40)[:8]]
    built = Builder(get_backend("onnxruntime"), cache, jobs=2).build(request_items(req) + extra)
    assert all(b.ok for b in built.values())
    return cache


@pytest.fixture
def env(ssh_env, model_cache, monkeypatch) -> Path:
    monkeypatch.setenv("OFAKIT_CACHE_DIR", str(model_cache))
    monkeypatch.setenv("OFAKIT_PROFILE_DIR", str(ssh_env / "profiles"))
    return ssh_env


def subset_models(model_cache: Path, n32: int, n40: int) -> dict[str, str]:
    """{id: model path} for the first ops at r=32 and r=40 (a couple of resolutions)."""
    b = Builder(get_backend("onnxruntime"), model_cache)
    items = ([Item.op(o) for o in resolution_ops(space_for_width(1.0), R)[:n32]]
             + [Item.op(o) for o in resolution_ops(space_for_width(1.0), 40)[:n40]])
    return {it.id: str(b.path_for(it)) for it in items}


def result_pairs(journal: Path) -> list[tuple[str, int]]:
    _, results = agent.read_results(str(journal))
    return [(r.id, r.round) for r in results]


def test_profile_over_ssh_matches_local_key_set(env, sshd_server, capsys):
    inv = env / "devices.yaml"
    inv.write_text(inventory_text({"pi": sshd_server}))
    # unknown host key: refused with one line, nothing measured
    assert main(["profile", "pi", *FAST, "-i", str(inv), "--retries", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown host key" in err and "--accept-new-host-key" in err

    assert main(["profile", "pi", *FAST, "-i", str(inv), "--accept-new-host-key"]) == 0
    from ofakit.device_profiles import load_profile

    remote = load_profile("pi-onnxruntime-1t")
    local = profile_device(ProfileRequest(device="cpu", resolutions=(R,), calibration_subnets=0, job=fast_job(1)),
                           env / "local").profile
    keys = lambda p: {(s.key, s.resolution) for s in p}  # noqa: E731
    assert len(remote) == len(local) == 96 and keys(remote) == keys(local)
    assert all(s.ms > 0 and s.rounds >= 1 for s in remote) and not remote.meta.errors
    meta = json.loads((remote.path / "profile.json").read_text())
    assert meta["device"] == "pi" and meta["environment"]["transport"] == "ssh"
    assert meta["environment"]["thermal"]["samples"] >= 2  # before, per batch, after
    text = (remote.path / "profile.json").read_text() + (remote.path / "lut.csv").read_text()
    assert "client_ed25519" not in text and "PRIVATE KEY" not in text  # no key paths or key material
    board = sshd_server.dir / "board"
    assert not list((board / "tmp").iterdir()) and not list((board / "runs").iterdir())  # remote temp cleaned
    # model files were sent packed (weights left out) and written on the board, as large as the host's
    packed = sorted((board / "models").glob("*.onnx.ofz"))
    expanded = [p.with_suffix("") for p in packed]
    assert len(packed) == 96 and all(m.stat().st_size > 0 for m in expanded)
    assert sum(p.stat().st_size for p in packed) * 10 < sum(m.stat().st_size for m in expanded)

    # `ofakit validate BOARD`: held-out subnets built here, measured on the board, compared with its profile
    assert main(["validate", "pi", "--n", "2", "--rounds", "1", "-i", str(inv), "--out", str(env / "val")]) == 0
    rows = list(csv.DictReader((env / "val" / "validation.csv").open()))
    assert len(rows) == 2 and all(float(r["measured_ms"]) > 0 and r["resolution"] == str(R) for r in rows)


def test_connection_killed_mid_run_then_rerun_completes(env, sshd_server, model_cache):
    trust(sshd_server, env / "known_hosts")
    (env / "devices.yaml").write_text(inventory_text({"pi": sshd_server}))
    dev = load_inventory(env / "devices.yaml").get("pi")
    models = subset_models(model_cache, 22, 8)
    journal = env / "work" / "journal.jsonl"
    job = fast_job(rounds=2)
    killed: list[int] = []

    def kill_after(n: int):
        def on_event(kind: str, data: dict) -> None:
            if kind == "result" and data["done"] >= n and len(killed) < 1:
                killed.extend(sshd_server.kill_connections())
        return on_event

    runner = SSHRunner(dev, get_backend("onnxruntime"), ssh_options(retries=0), reconnects=0, poll_s=0.2,
                       on_event=kill_after(6))
    with pytest.raises(RemoteError, match="re-run the same command to resume"):
        runner.measure(models, journal, job)
    assert killed
    first = result_pairs(journal)  # what the host had copied when the link died
    (board_journal,) = (sshd_server.dir / "board" / "runs").glob("*/results.jsonl")
    on_board = result_pairs(board_journal)  # the board kept journaling up to the kill
    assert set(first) <= set(on_board) and 5 <= len(on_board) < 2 * len(models)

    events: list[str] = []
    killed.clear()

    def watch(kind: str, data: dict) -> None:
        events.append(kind)
        if kind == "result" and data["done"] >= 10 and not killed:
            killed.extend(sshd_server.kill_connections())

    runner = SSHRunner(dev, get_backend("onnxruntime"), ssh_options(retries=2, backoff=0.2), reconnects=2,
                       poll_s=0.2, on_event=watch)
    summaries = runner.measure(models, journal, job)
    assert killed and "reconnect" in events  # dropped again, resumed within the same call
    assert len(summaries) == len(models) and all(s.ok and s.rounds == 2 for s in summaries.values())
    pairs = result_pairs(journal)
    assert len(pairs) == len(set(pairs)) == 2 * len(models)  # every (op, round) once: nothing lost or duplicated
    assert set(on_board) <= set(pairs)


def test_hung_op_times_out_and_the_run_goes_on(env, sshd_server, model_cache):
    trust(sshd_server, env / "known_hosts")
    (env / "devices.yaml").write_text(inventory_text({"pi": sshd_server}))
    dev = load_inventory(env / "devices.yaml").get("pi")
    models = subset_models(model_cache, 4, 0)
    hung_id = sorted(models)[1]
    models[hung_id] = str(hanging_onnx(env / "hang" / "hang.onnx"))  # runs ~forever once loaded
    runner = SSHRunner(dev, get_backend("onnxruntime"), ssh_options(retries=0), reconnects=0, poll_s=0.2)
    summaries = runner.measure(models, env / "hang.jsonl", fast_job(rounds=1, timeout=1.5))
    assert summaries[hung_id].error == agent.ErrorCode.RUN_TIMEOUT.value
    assert all(s.ok for i, s in summaries.items() if i != hung_id) and len(summaries) == 4


def test_two_boards_in_parallel_one_with_only_numpy_and_onnxruntime(env, model_cache, tmp_path, capsys):
    if not sshd_available():
        pytest.skip(SKIP_REASON)
    bare = bare_python(tmp_path / "bare")
    with SSHServer(tmp_path / "s1") as s1, SSHServer(tmp_path / "s2") as s2:
        trust(s1, env / "known_hosts")
        trust(s2, env / "known_hosts")
        inv = env / "devices.yaml"
        inv.write_text(inventory_text({"pi-a": s1, "pi-b": (s2, {"python": str(bare)})})
                       + "groups:\n  lab: {devices: [pi-a, pi-b]}\n")
        assert main(["devices", "check", "pi-b", "-i", str(inv), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)["info"]
        assert info["python"]["executable"] == str(bare)
        assert "error" in info["packages"]["ai_edge_litert"] and "version" in info["packages"]["onnxruntime"]

        assert main(["profile", "--tag", "lab", *FAST, "-i", str(inv)]) == 0
        out = capsys.readouterr()
        assert "pi-a-onnxruntime-1t" in out.out + out.err and "boards" in out.err
    from ofakit.device_profiles import load_profile

    spans = []
    for name in ("pi-a", "pi-b"):
        prof = load_profile(f"{name}-onnxruntime-1t")
        assert len(prof) == 96 and not prof.meta.errors
        assert prof.meta.environment["device"]["name"] == name
        _, results = agent.read_results(str(model_cache / "work" / f"{name}-onnxruntime-1t" / "journal.jsonl"))
        spans.append((min(r.time for r in results), max(r.time for r in results)))
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]  # the two boards measured at the same time
    assert load_profile("pi-b-onnxruntime-1t").meta.environment["python"] == info["python"]["version"]


def test_merge_journals_keeps_one_copy_of_every_line():
    h = '{"type": "header", "backend": "onnxruntime"}\n'
    a = h + '{"type": "result", "id": "x", "round": 0}\n'
    b = h + '{"type": "result", "id": "x", "round": 0}\n{"type": "result", "id": "y", "round": 0}\n{"type": "res'
    merged = merge_journals(a, b)
    assert merged == a + '{"type": "result", "id": "y", "round": 0}\n'
    assert merge_journals("", b) == merged and merge_journals(merged, a) == merged


# --- helpers -------------------------------------------------------------------------------------------------

def hanging_onnx(path: Path) -> Path:
    """A valid ONNX model that loops 10^12 times (a real op that never finishes in a test's lifetime)."""
    import onnx
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Add", ["x_in", "one"], ["x_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1])],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "cond", "x"], ["y"], body=body)], "hang",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [helper.make_tensor("M", TensorProto.INT64, [], [10 ** 12]),
         helper.make_tensor("cond", TensorProto.BOOL, [], [True])])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def bare_python(folder: Path) -> Path:
    """A venv whose site-packages holds only numpy and onnxruntime (links to this venv's copies): a board
    Python with nothing but the agent's allowed imports."""
    import numpy
    import onnxruntime

    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(folder)], check=True, capture_output=True)
    py = folder / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    src = Path(numpy.__file__).resolve().parents[1]
    assert Path(onnxruntime.__file__).resolve().parents[1] == src
    for entry in src.iterdir():
        if entry.name.split("-")[0].split(".")[0] in ("numpy", "onnxruntime"):
            os.symlink(entry, site / entry.name)
    return py


def test_bare_python_really_lacks_other_packages(tmp_path):
    py = bare_python(tmp_path / "bare")
    code = ("import importlib.util as u, json; print(json.dumps([m for m in ('numpy', 'onnxruntime', 'yaml', "
            "'paramiko', 'torch', 'typer', 'rich', 'ai_edge_litert') if u.find_spec(m)]))")
    found = json.loads(subprocess.run([str(py), "-I", "-c", code], check=True, capture_output=True,
                                      text=True).stdout)
    assert found == ["numpy", "onnxruntime"]


def test_op_timeout_reaches_the_boards_agent(env, sshd_server, tmp_path, capsys):
    """`--op-timeout` is part of the request built once: the agent on the board runs with it (it used to be 60 s
    whatever the option said). The board's Python is a wrapper that logs its command line, then runs this one."""
    from sshd import BOARD_PYTHON

    argv_log = tmp_path / "board-argv.log"
    wrapper = tmp_path / "board-python"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {argv_log}\nexec {BOARD_PYTHON} "$@"\n')
    wrapper.chmod(0o755)
    trust(sshd_server, env / "known_hosts")
    inv = env / "devices.yaml"
    inv.write_text(inventory_text({"pi": (sshd_server, {"python": str(wrapper)})}))
    assert main(["profile", "pi", *FAST, "-i", str(inv), "--op-timeout", "7.5"]) == 0
    measure = [ln.split() for ln in argv_log.read_text().splitlines() if " measure " in f" {ln} "]
    assert measure and all(a[a.index("--timeout") + 1] == "7.5" for a in measure)
    from ofakit.device_profiles import load_profile

    assert load_profile("pi-onnxruntime-1t").meta.method["job"]["timeout_s"] == 7.5
    assert main(["profile", "pi", *FAST, "-i", str(inv), "--op-timeout", "0"]) == 2  # typer's min=0.1
    assert "--op-timeout" in capsys.readouterr().err
