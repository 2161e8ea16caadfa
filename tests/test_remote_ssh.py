"""SSH transport and `ofakit devices` against a real OpenSSH server on 127.0.0.1 (started by the tests)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ofakit.cli import main
from ofakit.profiler.remote.check import assess, run_probe
from ofakit.profiler.remote.inventory import load_inventory
from ofakit.profiler.remote.probe import parse_throttled
from ofakit.profiler.remote.ssh import ConnectionLost, Connection, RemoteTimeout, ssh_options
from sshd import inventory_text, make_key, ssh_env, sshd_server, trust  # noqa: F401 - fixtures

PROBE = Path(__file__).resolve().parents[1] / "profiler" / "remote" / "probe.py"


def board(ssh_env: Path, srv, **extra):
    inv = ssh_env / "devices.yaml"
    inv.write_text(inventory_text({"b": srv}, **extra))
    return load_inventory(inv).get("b"), inv


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("ofakit: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_unknown_host_key_refused_then_accepted_and_recorded(ssh_env, sshd_server, capsys):
    _, inv = board(ssh_env, sshd_server)
    kh = ssh_env / "known_hosts"
    assert main(["devices", "check", "b", "-i", str(inv), "--retries", "0"]) == 2
    err = one_line_error(capsys)
    assert "unknown host key" in err and "--accept-new-host-key" in err and "SHA256:" in err
    assert not kh.exists()
    from ofakit.profiler.devices import RemoteSettings, board as find_board
    from ofakit.profiler.remote.ssh import Connection, HostKeyError

    with pytest.raises(HostKeyError) as info:  # the library names the argument, not the CLI's option
        Connection(find_board("b", RemoteSettings(inv)), RemoteSettings(inv, retries=0).ssh_options()).open()
    assert "re-run with accept_new_host_key" in str(info.value) and "--" not in str(info.value)
    assert main(["devices", "check", "b", "-i", str(inv), "--accept-new-host-key", "--json"]) == 0
    assert kh.read_text() == sshd_server.known_hosts_line()
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["info"]["python"]["executable"] == sys.executable


def test_changed_host_key_always_refused(ssh_env, sshd_server, capsys, tmp_path):
    other = make_key(tmp_path / "other_host")
    kind, b64 = Path(f"{other}.pub").read_text().split()[:2]
    (ssh_env / "known_hosts").write_text(f"[127.0.0.1]:{sshd_server.port} {kind} {b64}\n")
    _, inv = board(ssh_env, sshd_server)
    assert main(["devices", "check", "b", "-i", str(inv), "--accept-new-host-key"]) == 2
    assert "differs from the recorded one" in one_line_error(capsys)


def test_wrong_key_unreachable_host_and_bad_inventory_one_line(ssh_env, sshd_server, capsys, tmp_path):
    trust(sshd_server, ssh_env / "known_hosts")
    wrong = make_key(tmp_path / "wrong_key")
    _, inv = board(ssh_env, sshd_server, key_file=str(wrong))
    assert main(["devices", "check", "b", "-i", str(inv)]) == 2
    err = one_line_error(capsys)
    assert "authentication failed" in err and "(after" not in err  # auth failures are not retried

    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    inv.write_text(f"devices:\n  b: {{host: 127.0.0.1, port: {closed}, key_file: {sshd_server.client_key}}}\n")
    assert main(["devices", "check", "b", "-i", str(inv), "--retries", "1", "--connect-timeout", "2"]) == 2
    err = one_line_error(capsys)
    assert "connection refused" in err and "after 2 tries" in err

    inv.write_text("devices:\n  b: {host: 127.0.0.1, port: twenty-two}\n")
    assert main(["devices", "check", "b", "-i", str(inv)]) == 2
    err = one_line_error(capsys)
    assert str(inv) in err and "device 'b'" in err and "'port'" in err
    assert main(["devices", "list", "-i", str(tmp_path / "nope.yaml")]) == 2
    assert "no device inventory" in one_line_error(capsys)


def test_quoting_upload_by_hash_temp_dir_and_timeouts(ssh_env, sshd_server, tmp_path):
    trust(sshd_server, ssh_env / "known_hosts")
    dev, _ = board(ssh_env, sshd_server)
    nasty = ["a b", "it's", "$HOME", "`id`", "; rm -rf /", "*", "\"q\"", "\\n"]
    with Connection(dev, ssh_options(retries=0)) as conn:
        out = conn.run([sys.executable, "-c", "import sys, json; print(json.dumps(sys.argv[1:]))", *nasty]).stdout
        assert json.loads(out) == nasty
        src = tmp_path / "model.bin"
        src.write_bytes(os.urandom(200_000))
        dest = str(tmp_path / "board" / "sub dir" / "model.bin")
        assert conn.sync([(src, dest)]) == 1
        assert Path(dest).read_bytes() == src.read_bytes()
        assert conn.sync([(src, dest)]) == 0  # same hash: not sent again
        src.write_bytes(os.urandom(1000))
        assert conn.sync([(src, dest)]) == 1 and Path(dest).read_bytes() == src.read_bytes()
        tmp = conn.make_temp_dir(conn.expand(dev.workdir) + "/tmp")
        assert Path(tmp).is_dir()
        conn.remove_tree(tmp)
        assert not Path(tmp).exists()
        with pytest.raises(RemoteTimeout, match="ran past 0.5s"):
            conn.run(["sleep", "3"], timeout=0.5)
        lines: list[str] = []

        def on_line(line: str) -> None:  # kill the sshd process serving this connection after two lines
            lines.append(line)
            if len(lines) == 2:
                assert sshd_server.kill_connections()

        with pytest.raises(ConnectionLost, match="lost"):
            conn.stream(["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do echo l$i; sleep 0.3; done"], on_line)
        assert lines[:2] == ["l1", "l2"] and len(lines) < 8


def test_probe_on_this_board_and_missing_runtime_fix_line(ssh_env, sshd_server):
    trust(sshd_server, ssh_env / "known_hosts")
    dev, _ = board(ssh_env, sshd_server, backend="onnxruntime")
    with Connection(dev, ssh_options(retries=0)) as conn:
        info = run_probe(conn)
    assert info["cpu"]["cores"] == os.cpu_count() and info["packages"]["numpy"]["version"]
    rep = assess(dev, info)
    assert rep.ok and rep.runtime()[0] == "onnxruntime"
    info["packages"]["onnxruntime"] = {"error": "No module named 'onnxruntime'"}
    info["python"]["externally_managed"] = False
    rep = assess(dev, info)
    assert not rep.ok and rep.fixes == [f"{sys.executable} -m pip install onnxruntime"]


def test_throttle_flags_with_fake_vcgencmd_mock_no_physical_pi(tmp_path):
    """No Raspberry Pi here: a stand-in `vcgencmd` prints a real get_throttled answer (under-voltage now,
    throttling since boot) so the probe's parsing and the check's warnings are exercised end to end."""
    fake = tmp_path / "vcgencmd"
    fake.write_text("#!/bin/sh\necho throttled=0x50005\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    out = subprocess.run([sys.executable, "-I", str(PROBE), "state"], env=env, capture_output=True, text=True,
                         check=True).stdout
    thr = json.loads(out)["throttled"]
    assert thr["raw"] == "0x50005" and thr["under_voltage"] and thr["throttled"] and not thr["freq_capped"]
    assert thr["under_voltage_occurred"] and thr["throttled_occurred"] and not thr["soft_temp_limit_occurred"]
    assert parse_throttled("throttled=0x0")["throttled"] is False


def test_board_side_files_are_python37_syntax():
    """probe.py and the agent run on boards with Python >= 3.7: their syntax must parse under 3.7's grammar."""
    import ast

    from ofakit.profiler.agent import AGENT_FILE

    for path in (PROBE, AGENT_FILE):
        ast.parse(Path(path).read_text(), filename=str(path), feature_version=(3, 7))
