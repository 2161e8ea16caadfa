"""A real OpenSSH server on 127.0.0.1 for the SSH profiling tests (a "board" whose Python is this venv's).

:class:`SSHServer` generates an ed25519 host key and a client key in a temp folder, writes ``authorized_keys``
and an ``sshd_config`` (``StrictModes no``, ``UsePAM no``, pid file in the temp folder), starts
``sshd -D -f CONFIG -E LOG`` on a free port and waits until it answers. :meth:`SSHServer.connection_pids`
finds the per-connection sshd processes (children of the listener) so a test can kill a live connection.
"""
from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = "ssh-keygen"
SKIP_REASON = "OpenSSH server (/usr/sbin/sshd) is not installed; `make sysdeps` installs openssh-server"


def sshd_available() -> bool:
    return SSHD.is_file() and os.access(SSHD, os.X_OK)


def make_key(path: Path) -> Path:
    """Generate an unencrypted ed25519 key pair at ``path`` (+ ``.pub``)."""
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "ofakit-test", "-f", str(path)],
                   check=True, capture_output=True)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SSHServer:
    """One sshd serving 127.0.0.1:``port``, logging in :attr:`user` with :attr:`client_key`."""

    def __init__(self, folder: Path):
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.user = getpass.getuser()
        self.host = "127.0.0.1"
        self.port = 0
        self.host_key = make_key(self.dir / "host_ed25519")
        self.client_key = make_key(self.dir / "client_ed25519")
        (self.dir / "authorized_keys").write_text((self.dir / "client_ed25519.pub").read_text())
        self.log = self.dir / "sshd.log"
        self.pid_file = self.dir / "sshd.pid"
        self.proc: subprocess.Popen | None = None

    def _config(self) -> Path:
        cfg = self.dir / "sshd_config"
        cfg.write_text("\n".join([
            f"Port {self.port}", f"ListenAddress {self.host}", f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}", f"PidFile {self.pid_file}",
            "StrictModes no", "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", "MaxStartups 50:30:100",
            "LogLevel VERBOSE", "Subsystem sftp internal-sftp",
            # bash sources ~/.bashrc for commands run by sshd only at shell level < 2; starting sessions at
            # level 1 keeps this machine's rc files (e.g. a slow `pyenv init`) out of every remote command
            "SetEnv SHLVL=1", ""]))
        return cfg

    def start(self, timeout: float = 15.0) -> "SSHServer":
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # the free port may be taken between probing and binding: try another
            self.port = _free_port()
            cfg = self._config()
            self.proc = subprocess.Popen([str(SSHD), "-D", "-f", str(cfg), "-E", str(self.log)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with socket.create_connection((self.host, self.port), timeout=1) as s:
                        s.settimeout(2)
                        if s.recv(64).startswith(b"SSH-"):
                            return self
                except OSError:
                    time.sleep(0.05)
            self.stop()
        raise RuntimeError(f"sshd did not start; log: {self.log.read_text() if self.log.exists() else '(none)'}")

    def stop(self) -> None:
        if self.proc is None:
            return
        for pid in self.connection_pids():
            _kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "SSHServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def connection_pids(self) -> list[int]:
        """PIDs of the sshd processes serving live connections (the listener's children)."""
        if self.proc is None:
            return []
        out = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.proc.pid:
                out.append(int(d.name))
        return out

    def kill_connections(self) -> list[int]:
        """Kill every per-connection sshd process (SIGKILL): the clients see their link drop."""
        pids = self.connection_pids()
        for pid in pids:
            _kill(pid, signal.SIGKILL)
        return pids

    def known_hosts_line(self) -> str:
        """The line an OpenSSH known_hosts file holds for this server."""
        kind, b64 = (self.dir / "host_ed25519.pub").read_text().split()[:2]
        return f"[{self.host}]:{self.port} {kind} {b64}\n"


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# --- pytest fixtures (import them into a test module: ``from sshd import ssh_env, sshd_server``) -------------
BOARD_PYTHON = sys.executable


@pytest.fixture
def ssh_env(tmp_path, monkeypatch):
    """A private ofakit known-hosts file, no ssh-agent, no inventory from the environment."""
    monkeypatch.setenv("OFAKIT_KNOWN_HOSTS", str(tmp_path / "known_hosts"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("OFAKIT_INVENTORY", raising=False)
    return tmp_path


@pytest.fixture
def sshd_server(tmp_path):
    """A running sshd whose host key is already trusted through ofakit's known-hosts file (see ``ssh_env``)."""
    if not sshd_available():
        pytest.skip(SKIP_REASON)
    with SSHServer(tmp_path / "sshd") as srv:
        yield srv


def trust(server: SSHServer, known_hosts: Path) -> None:
    """Record ``server``'s host key in ``known_hosts`` (what --accept-new-host-key would do after a check)."""
    with open(known_hosts, "a") as f:
        f.write(server.known_hosts_line())


def inventory_text(boards: dict, **common: object) -> str:
    """Inventory YAML for ``{name: server or (server, {field: value})}``: each board's Python is this venv's and
    its workdir is in the server's folder unless the fields (or ``common``) say otherwise."""
    lines = ["devices:"]
    for name, entry in boards.items():
        srv, own = entry if isinstance(entry, tuple) else (entry, {})
        fields = {"host": srv.host, "port": srv.port, "key_file": str(srv.client_key), "python": BOARD_PYTHON,
                  "workdir": str(srv.dir / "board"), **common, **own}
        lines.append(f"  {name}: " + "{" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}")
    return "\n".join(lines) + "\n"
