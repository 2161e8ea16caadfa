"""Emulated ARM boards profiled over SSH: Debian ARM roots (arm64 bookworm, armhf bullseye) run under qemu-user,
each with its own OpenSSH server, Python, numpy and runtimes (real ARM binaries), started through the same
``make board-ARCH`` a user runs (boards/board.sh). The tests skip with the reason where a board cannot run (not
root, no binfmt_misc, no Debian mirror); both roots are built at once when the session starts (conftest.py) and
cached in ~/.cache/ofakit/boards. Each board starts fresh, as a newly flashed Pi: no numpy, no runtime."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from ofakit.cli import main
from ofakit.profiler.agent import ofakit_agent as agent
from ofakit.profiler.backends import get_backend
from ofakit.profiler.builder import Builder
from ofakit.profiler.items import Item
from ofakit.profiler.pipeline import ProfileRequest, profile_device
from ofakit.profiler.remote.check import assess
from ofakit.profiler.remote.inventory import load_inventory
from ofakit.profiler.remote.runner import SSHRunner
from ofakit.profiler.remote.ssh import Connection, RemoteError, ssh_options
from ofakit.ofa_core.ops import resolution_ops
from ofakit.ofa_core.space import space_for_width
from emulated_boards import board_connection_pids, board_dir, timed

REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "profiler" / "remote" / "probe.py"
R = 32
# A request sized for emulation: one small resolution, one round, two calibration subnets.
REQUEST = ["--resolutions", str(R), "--rounds", "1", "--extra-rounds", "0", "--calibration-subnets", "2",
           "--min-time", "0.002", "--connect-timeout", "60"]
VENV = "~/ofakit-venv"


class Board:
    """One started board seen from a test: its inventory (rewritten in a temp folder) and a shell on it."""

    def __init__(self, arch: str, source: Path, folder: Path):
        self.arch = arch
        self.raw = yaml.safe_load(source.read_text())
        self.inv = folder / "devices.yaml"
        self.configure()

    def configure(self, **fields: object) -> Path:
        """Write the inventory with the board's entry changed by ``fields``."""
        self.raw["devices"][self.arch].update(fields)
        self.inv.write_text(yaml.safe_dump(self.raw))
        return self.inv

    def shell(self, line: str, timeout: float = 1200.0) -> str:
        """Run a shell line as user pi on the board (what a user types into ``ssh pi@board``)."""
        dev = load_inventory(self.inv).get(self.arch)
        with Connection(dev, ssh_options(command_timeout=timeout)) as conn:
            res = conn.run(["sh", "-c", line], timeout=timeout, check=False)
        assert res.rc == 0, f"{line!r} failed on {self.arch}: {res.stderr[-2000:]}"
        return res.stdout

    def as_root(self, *argv: str, timeout: float = 1200.0) -> None:
        """Run a command as root on the board (what ``sudo`` does on a Pi)."""
        subprocess.run(["chroot", str(board_dir(self.arch)), *argv], check=True, capture_output=True,
                       timeout=timeout, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


@pytest.fixture(scope="module")
def board_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Private known-hosts, profile and model-cache folders for one module (boards are shared by the session)."""
    folder = tmp_path_factory.mktemp("board_env")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OFAKIT_KNOWN_HOSTS", str(folder / "known_hosts"))
        mp.setenv("OFAKIT_PROFILE_DIR", str(folder / "profiles"))
        mp.setenv("OFAKIT_CACHE_DIR", str(folder / "cache"))
        mp.delenv("SSH_AUTH_SOCK", raising=False)
        mp.delenv("OFAKIT_INVENTORY", raising=False)
        yield folder


def check(board: Board, capsys: pytest.CaptureFixture, *flags: str) -> dict:
    capsys.readouterr()
    rc = main(["devices", "check", board.arch, "-i", str(board.inv), "--json", *flags])
    report = json.loads(capsys.readouterr().out)
    assert rc == (0 if report["ok"] else 1)
    return report


def fix_command(report: dict) -> str:
    """The shell command of the check's one fix line (the text before its parenthesised advice)."""
    (line,) = report["fixes"]
    return line.split("  (")[0]


def profile_and_compare(board: Board, backend: str, folder: Path) -> dict:
    """``ofakit profile BOARD`` with ``backend``; its op keys equal the local runner's for the same request."""
    from ofakit.device_profiles import load_profile

    assert main(["profile", "measure", board.arch, "-b", backend, *REQUEST, "-i", str(board.inv)]) == 0
    remote = load_profile(f"{board.arch}-{backend}-1t")
    job = agent.JobSettings(agent.TimingSettings(warmup_runs=1, warmup_s=0.0, min_runs=3, min_s=0.002),
                            rounds=1, extra_rounds=0)
    local = profile_device(ProfileRequest(device="cpu", backend=backend, resolutions=(R,), calibration_subnets=2,
                                          job=job), folder / f"local-{backend}").profile
    keys = lambda p: {(s.key, s.resolution) for s in p}  # noqa: E731
    assert len(remote) > 50 and keys(remote) == keys(local)
    assert all(s.ms > 0 for s in remote) and not remote.meta.errors
    env = json.loads((remote.path / "profile.json").read_text())["environment"]
    assert env["transport"] == "ssh" and env["machine"] == {"arm64": "aarch64", "armhf": "armv7l"}[board.arch]
    assert env["emulated"] is True and "qemu" in env["emulation"]  # an emulated board's timings are not a device's
    text = (remote.path / "profile.json").read_text()
    assert "id_ed25519" not in text and "PRIVATE KEY" not in text
    return env


def killed_link_then_rerun_loses_nothing(board: Board, backend: str) -> None:
    """Measure op models already built for ``backend``; the link dies mid-run, a re-run completes every
    (op, round) exactly once."""
    cache = Path(os.environ["OFAKIT_CACHE_DIR"])
    b = Builder(get_backend(backend), cache)
    items = [Item.op(o) for o in resolution_ops(space_for_width(1.0), R)[:12]]
    models = {it.id: str(b.path_for(it)) for it in items}
    assert all(Path(p).is_file() for p in models.values())
    dev = load_inventory(board.inv).get(board.arch)
    journal = cache / f"kill-{board.arch}-{backend}.jsonl"
    job = agent.JobSettings(agent.TimingSettings(warmup_runs=1, warmup_s=0.0, min_runs=3, min_s=0.002),
                            rounds=2, extra_rounds=0, timeout_s=300)
    killed: list[int] = []

    def kill_after_4(kind: str, data: dict) -> None:
        if kind == "result" and data["done"] >= 4 and not killed:
            killed.extend(board_connection_pids(board.arch))
            for pid in killed:
                os.kill(pid, signal.SIGKILL)

    opts = ssh_options(retries=0, connect_timeout=60)
    runner = SSHRunner(dev, get_backend(backend), opts, reconnects=0, poll_s=0.5, on_event=kill_after_4)
    with pytest.raises(RemoteError, match="re-run the same command to resume"):
        runner.measure(models, journal, job)
    assert killed
    _, first = agent.read_results(str(journal))
    summaries = SSHRunner(dev, get_backend(backend), ssh_options(connect_timeout=60), poll_s=0.5).measure(
        models, journal, job)
    assert len(summaries) == len(models) and all(s.ok and s.rounds == 2 for s in summaries.values())
    _, results = agent.read_results(str(journal))
    pairs = [(r.id, r.round) for r in results]
    assert len(pairs) == len(set(pairs)) == 2 * len(models)  # every (op, round) once: nothing lost or duplicated
    assert {(r.id, r.round) for r in first} <= set(pairs)


@pytest.mark.board
@pytest.mark.slow
def test_arm64_fresh_board_fixed_by_the_checks_line_then_profiled(boards, board_env, capsys):
    board = Board("arm64", boards.inventory("arm64"), board_env)
    # A fresh bookworm board: Python refuses pip (PEP 668), no numpy, no runtime; the check names the fix.
    board.configure(backend="tflite")
    with timed("arm64", "devices check (fresh board)"):
        report = check(board, capsys, "--accept-new-host-key")
    assert not report["ok"] and report["info"]["python"]["externally_managed"]
    assert "numpy" in report["problems"][0] and "tflite" in report["problems"][1]
    line = fix_command(report)
    assert line.startswith(f"python3 -m venv {VENV} && {VENV}/bin/pip install")
    with timed("arm64", "board setup: the check's fix line (venv, numpy<2, tflite-runtime)"):
        board.shell(line)
    board.configure(python=f"{VENV}/bin/python")
    with timed("arm64", "devices check (ready)"):
        assert check(board, capsys)["ok"]

    board.configure(backend="onnxruntime")  # a second runtime: the check names the pip line for the venv
    report = check(board, capsys)
    assert not report["ok"] and fix_command(report).endswith("pip install onnxruntime")
    with timed("arm64", "board setup: pip install onnxruntime"):
        board.shell(fix_command(report))
    report = check(board, capsys)
    assert report["ok"] and report["info"]["python"]["version"].startswith("3.11")

    with timed("arm64", "profile tflite (models built here, measured on the board)"):
        env = profile_and_compare(board, "tflite", board_env)
    assert env["runtime"].get("tflite_runtime") and env["numpy"].startswith("1.")
    with timed("arm64", "profile onnxruntime"):
        profile_and_compare(board, "onnxruntime", board_env)
    board.configure(backend="tflite")
    with timed("arm64", "validate --n 3 (tflite)"):
        assert main(["validate", "arm64", "--n", "3", "--rounds", "1", "--anchors", "0", "-i", str(board.inv),
                     "--out", str(board_env / "val"), "--connect-timeout", "60"]) == 0
    rows = (board_env / "val" / "validation.csv").read_text().splitlines()
    assert len(rows) == 4

    with timed("arm64", "link killed mid-run, re-run"):
        killed_link_then_rerun_loses_nothing(board, "onnxruntime")


@pytest.mark.board
@pytest.mark.slow
def test_armhf_python39_board_profiled_with_tflite_runtime_211(boards, board_env, capsys):
    board = Board("armhf", boards.inventory("armhf"), board_env)
    report = check(board, capsys, "--accept-new-host-key")
    assert not report["ok"] and report["info"]["python"]["version"].startswith("3.9")
    assert report["info"]["cpu"]["machine"] == "armv7l"
    # PyPI has no numpy for 32-bit ARM: Debian's python3-numpy (1.19.5) under a venv that sees it, and the last
    # tflite-runtime whose armv7l wheel runs with it on bullseye: 2.11 (2.13's needs numpy's >= 1.20 C API,
    # 2.12's a newer libstdc++).
    with timed("armhf", "board setup: apt python3-numpy, venv, tflite-runtime 2.11"):
        board.as_root("apt-get", "update", "-qq")
        board.as_root("apt-get", "install", "-y", "-qq", "--no-install-recommends", "python3-numpy")
        board.shell(f"python3 -m venv --system-site-packages {VENV} && "
                    f"{VENV}/bin/pip install -q --no-deps tflite-runtime==2.11.0")
    board.configure(python=f"{VENV}/bin/python")
    with timed("armhf", "devices check (ready)"):
        assert check(board, capsys)["ok"]

    with timed("armhf", "profile tflite (models built here, measured on the board)"):
        env = profile_and_compare(board, "tflite", board_env)
    assert env["python"].startswith("3.9") and env["runtime"]["tflite_runtime"] == "2.11.0"  # the agent's floor
    with timed("armhf", "validate --n 3 (tflite)"):
        assert main(["validate", "armhf", "--n", "3", "--rounds", "1", "--anchors", "0", "-i", str(board.inv),
                     "--out", str(board_env / "val"), "--connect-timeout", "60"]) == 0
    with timed("armhf", "link killed mid-run, re-run"):
        killed_link_then_rerun_loses_nothing(board, "tflite")


def test_probe_reports_a_runtime_whose_import_segfaults_standin(tmp_path):
    """A stand-in runtime (a package named onnxruntime whose import kills Python with SIGSEGV, as onnxruntime's
    does under qemu with /sys mounted): the probe reports it as that runtime's problem and still answers."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(tmp_path / "v")], check=True, capture_output=True)
    py = tmp_path / "v" / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "onnxruntime").mkdir()
    (site / "onnxruntime" / "__init__.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    from ofakit.profiler.remote.check import RUNTIME_MODULES

    modules = sorted({m for ms in RUNTIME_MODULES.values() for m in ms})  # what `devices check` asks the probe
    res = subprocess.run([str(py), "-I", "-", "full", *modules], input=PROBE.read_text(), capture_output=True,
                         text=True, check=True)
    info = json.loads(res.stdout)
    assert info["packages"]["onnxruntime"] == {"error": "import crashed Python (SIGSEGV)", "crashed": "SIGSEGV"}
    assert "No module named" in info["packages"]["numpy"]["error"]
    from ofakit.profiler.remote.inventory import Device

    rep = assess(Device(name="pi", host="127.0.0.1"), info)
    assert any("SIGSEGV" in p for p in rep.problems)
    assert any(f.startswith("onnxruntime crashes Python on import") for f in rep.fixes)
    assert not any("pip install numpy onnxruntime" in f for f in rep.fixes)
