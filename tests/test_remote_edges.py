"""SSH edge cases against a real OpenSSH server on 127.0.0.1: a link cut during login, a command killed by a signal
with the link up, ``--fresh`` after an interrupted run, temp folders of killed runs, the changed-host-key hint for
a non-22 port, and no key file paths in messages."""
from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from ofakit.cli import main
from ofakit.profiler.agent import ofakit_agent as agent
from ofakit.profiler.backends import get_backend
from ofakit.profiler.remote.inventory import load_inventory
from ofakit.profiler.remote.runner import SSHRunner
from ofakit.profiler.remote.ssh import Connection, RemoteCommandError, RemoteError, ssh_options
from sshd import inventory_text, make_key, ssh_env, sshd_server, trust  # noqa: F401 - fixtures
from test_remote_profile import env, fast_job, model_cache, subset_models  # noqa: F401 - fixtures

NEWKEYS = 21


class LoginCutter:
    """A TCP relay to sshd that cuts its first ``cuts`` connections during login: after both sides' key exchange
    (NEWKEYS), when the client sends its first encrypted packet (the user-auth service request). Later
    connections are relayed untouched."""

    def __init__(self, port: int, cuts: int):
        self.port, self.cuts, self.cut = port, cuts, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.listen_port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            s = socket.create_connection(("127.0.0.1", self.port))
            cut = self.cut < self.cuts
            self.cut += cut
            state = {"server_newkeys": False}
            threading.Thread(target=self._relay, args=(s, c, cut, state, "server"), daemon=True).start()
            threading.Thread(target=self._relay, args=(c, s, cut, state, "client"), daemon=True).start()

    @staticmethod
    def _relay(src: socket.socket, dst: socket.socket, cut: bool, state: dict, side: str) -> None:
        buf, banner, newkeys = b"", True, False
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not cut or (newkeys and side == "server"):
                    if not cut:
                        dst.sendall(data)
                    continue  # the server's encrypted packets are held back: the client waits in login
                if newkeys:  # the client's first encrypted packet: it is logging in now - cut the link
                    for sock in (src, dst):
                        sock.close()
                    return
                buf += data
                out = b""
                if banner and b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    out += line + b"\r\n"
                    banner = False
                while not banner and not newkeys and len(buf) >= 6:
                    size = int.from_bytes(buf[:4], "big") + 4
                    if len(buf) < size:
                        break
                    packet, buf = buf[:size], buf[size:]
                    out += packet
                    newkeys = packet[5] == NEWKEYS
                dst.sendall(out)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def _inventory(ssh_env: Path, srv, port: int | None = None, **extra) -> Path:
    inv = ssh_env / "devices.yaml"
    text = inventory_text({"b": srv}, **extra)
    inv.write_text(text.replace(f"port: {srv.port}", f"port: {port}") if port else text)
    return inv


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("ofakit: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_link_cut_during_login_is_a_dropped_connection_and_retried(ssh_env, sshd_server, capsys):
    relay = LoginCutter(sshd_server.port, cuts=2)
    try:
        (ssh_env / "known_hosts").write_text(sshd_server.known_hosts_line().replace(
            f":{sshd_server.port} ", f":{relay.listen_port} "))
        inv = _inventory(ssh_env, sshd_server, relay.listen_port)
        assert main(["devices", "check", "b", "-i", str(inv), "--retries", "0"]) == 2
        err = _one_line(capsys)
        assert "dropped during login" in err and "authentication failed" not in err, err
        assert str(sshd_server.client_key) not in err
        assert main(["devices", "check", "b", "-i", str(inv), "--retries", "2", "--json"]) == 0  # 1 cut, then in
        assert relay.cut == 2
    finally:
        relay.close()


def test_refused_key_is_not_retried_and_names_no_key_path(ssh_env, sshd_server, capsys, tmp_path):
    trust(sshd_server, ssh_env / "known_hosts")
    wrong = make_key(tmp_path / "wrong_key")
    inv = _inventory(ssh_env, sshd_server, key_file=str(wrong))
    assert main(["devices", "check", "b", "-i", str(inv), "--retries", "2"]) == 2
    err = _one_line(capsys)
    assert "authentication failed" in err and "(after" not in err and str(wrong) not in err
    inv = _inventory(ssh_env, sshd_server, key_file=str(tmp_path / "no_such_key"))
    assert main(["devices", "check", "b", "-i", str(inv)]) == 2
    err = _one_line(capsys)
    assert "key_file" in err and "no_such_key" not in err


def test_changed_host_key_hint_names_the_port(ssh_env, sshd_server, capsys, tmp_path):
    other = make_key(tmp_path / "other_host")
    kind, b64 = Path(f"{other}.pub").read_text().split()[:2]
    (ssh_env / "known_hosts").write_text(f"[127.0.0.1]:{sshd_server.port} {kind} {b64}\n")
    inv = _inventory(ssh_env, sshd_server)
    assert main(["devices", "check", "b", "-i", str(inv)]) == 2
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd_server.port}'" in _one_line(capsys)


def test_command_killed_by_a_signal_with_the_link_up(ssh_env, sshd_server):
    trust(sshd_server, ssh_env / "known_hosts")
    dev = load_inventory(_inventory(ssh_env, sshd_server)).get("b")
    with Connection(dev, ssh_options(retries=0)) as conn:
        with pytest.raises(RemoteCommandError, match="killed by a signal") as info:
            conn.run(["sh", "-c", "kill -9 $$"])
        assert "lost" not in str(info.value)
        assert conn.run(["echo", "still here"]).stdout.strip() == "still here"


def test_fresh_then_rerun_never_brings_back_older_results(env, sshd_server, model_cache):  # noqa: F811
    """A run cut mid-way leaves results (and its temp folder) on the board; --fresh, stopped before it merged
    anything, then a plain re-run: the final journal holds none of the old results, and the board keeps neither
    the old run folder nor the killed sessions' temp folders."""
    trust(sshd_server, env / "known_hosts")
    dev = load_inventory(_inventory(env, sshd_server)).get("b")
    models = subset_models(model_cache, 12, 0)
    journal = env / "work" / "journal.jsonl"
    board = sshd_server.dir / "board"
    killed: list[int] = []

    def kill_after(kind: str, data: dict) -> None:
        if kind == "result" and data["done"] >= 6 and not killed:
            killed.extend(sshd_server.kill_connections())

    with pytest.raises(RemoteError):
        SSHRunner(dev, get_backend("onnxruntime"), ssh_options(retries=0), reconnects=0, poll_s=0.2,
                  on_event=kill_after).measure(models, journal, fast_job(rounds=2))
    (old_journal,) = (board / "runs").glob("*/results.jsonl")
    old = {ln for ln in old_journal.read_text().splitlines() if '"round"' in ln}
    assert old and list((board / "tmp").glob("ofakit.*"))  # results and a temp folder left behind

    journal.unlink()  # --fresh

    def stop_at_upload(kind: str, data: dict) -> None:
        if kind == "upload":
            raise KeyboardInterrupt  # the user stops the fresh run before it merged anything

    with pytest.raises(KeyboardInterrupt):
        SSHRunner(dev, get_backend("onnxruntime"), ssh_options(retries=0), reconnects=0,
                  on_event=stop_at_upload).measure(models, journal, fast_job(rounds=2))
    summaries = SSHRunner(dev, get_backend("onnxruntime"), ssh_options(retries=0), reconnects=0,
                          poll_s=0.2).measure(models, journal, fast_job(rounds=2))
    assert len(summaries) == len(models)
    lines = set(journal.read_text().splitlines())
    assert not old & lines  # nothing from before --fresh came back
    _, results = agent.read_results(str(journal))
    assert len(results) == len({(r.id, r.round) for r in results}) == 2 * len(models)
    assert not old_journal.parent.exists()
    assert list((board / "tmp").glob("ofakit.*")) == []  # the killed sessions' temp folders are gone


def test_profile_run_retries_a_login_cut_under_reconnects(env, sshd_server, model_cache):  # noqa: F811
    relay = LoginCutter(sshd_server.port, cuts=2)
    try:
        (env / "known_hosts").write_text(sshd_server.known_hosts_line().replace(
            f":{sshd_server.port} ", f":{relay.listen_port} "))
        dev = load_inventory(_inventory(env, sshd_server, relay.listen_port)).get("b")
        models = subset_models(model_cache, 4, 0)
        events: list[str] = []
        summaries = SSHRunner(dev, get_backend("onnxruntime"), ssh_options(retries=0, backoff=0.1), reconnects=2,
                              on_event=lambda kind, data: events.append(kind)).measure(
            models, env / "j.jsonl", fast_job(rounds=1))
        assert relay.cut == 2 and events.count("reconnect") == 2
        assert len(summaries) == len(models) and all(s.ok for s in summaries.values())
    finally:
        relay.close()
