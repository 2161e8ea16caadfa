"""SSH transport to a board (paramiko): host-key checking, retries, quoted commands, hash-checked uploads.

Security defaults: a host key must already be known (``~/.ssh/known_hosts`` or ofakit's own known-hosts file);
an unknown key is refused unless the caller opts in with ``accept_new_host_key`` (``--accept-new-host-key``),
which accepts it once and records it in ofakit's file; a *changed* key is always refused. Authentication uses
the inventory's key file or ssh-agent, never passwords. Every remote command is built from an argument list
and each argument is ``shlex.quote``-d. Logs carry addresses and commands, never key material.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import posixpath
import select
import shlex
import socket
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Mapping, Sequence

import paramiko

from ofakit.device_profiles import atomic_write_text
from ofakit.ofa_core.errors import UserError, literal

from .inventory import Device

log = logging.getLogger("ofakit.remote")
KNOWN_HOSTS_ENV = "OFAKIT_KNOWN_HOSTS"
_KNOWN_HOSTS_LOCK = threading.Lock()
TAR_THRESHOLD = 8  # from this many changed files on, one tar stream replaces per-file SFTP


class RemoteError(UserError):
    """Something went wrong talking to a board; one line naming the device."""


class HostKeyError(RemoteError):
    """The board's host key is unknown (and not accepted) or differs from the recorded one."""


class AuthError(RemoteError):
    """The board refused our key."""


class ConnectError(RemoteError):
    """The board could not be reached (after retries)."""


class ConnectionLost(RemoteError):
    """An established connection dropped (the board rebooted, the link died, sshd was killed)."""


class _DroppedDuringLogin(ConnectionResetError):
    """The link died while logging in: paramiko reports it as an authentication failure, but it is a network
    failure (retried), not a refused key."""


class RemoteTimeout(RemoteError):
    """A remote command or transfer ran past its time limit."""


class RemoteCommandError(RemoteError):
    """A remote command exited with a non-zero status."""

    def __init__(self, message: str, rc: int, stderr: str):
        super().__init__(message)
        self.rc, self.stderr = rc, stderr


def default_known_hosts() -> Path:
    """ofakit's own known-hosts file: ``$OFAKIT_KNOWN_HOSTS`` or ``~/.config/ofakit/known_hosts``."""
    env = os.environ.get(KNOWN_HOSTS_ENV)
    return Path(env).expanduser() if env else Path.home() / ".config" / "ofakit" / "known_hosts"


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of a public key."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"{key.get_name()} SHA256:{digest}"


@dataclass(frozen=True)
class SSHOptions:
    """How to connect: timeouts (seconds), retries with exponential backoff, host-key policy."""

    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    upload_timeout: float = 300.0
    keepalive: int = 15
    retries: int = 3
    backoff: float = 1.0
    accept_new_host_key: bool = False
    known_hosts: Path = field(default_factory=default_known_hosts)
    system_known_hosts: Path | None = field(default_factory=lambda: Path.home() / ".ssh" / "known_hosts")


def ssh_options(**overrides: object) -> SSHOptions:
    """:class:`SSHOptions` with the given fields changed (what the CLI's flags build)."""
    return replace(SSHOptions(), **overrides)


def command_line(argv: Sequence[str], cwd: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """A shell command line from an argument list: every piece quoted; optional ``cd`` and environment."""
    if not argv:
        raise ValueError("empty remote command")
    parts = [shlex.quote(str(a)) for a in argv]
    if env:
        parts = ["env"] + [shlex.quote(f"{k}={v}") for k, v in env.items()] + parts
    line = " ".join(parts)
    return f"cd {shlex.quote(cwd)} && {line}" if cwd else line


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse an unknown host key, or (opt-in) accept it and record it in ofakit's known-hosts file."""

    def __init__(self, device: Device, options: SSHOptions):
        self.device, self.options = device, options

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        fp = fingerprint(key)
        store = self.options.known_hosts
        if not self.options.accept_new_host_key:
            raise HostKeyError(
                f"{self.device.name}: unknown host key for {hostname} ({fp}); check it on the board "
                f"(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) and re-run with {{accept_new_host_key}} to "
                f"trust it and record it in {store}", params=("accept_new_host_key",))
        client.get_host_keys().add(hostname, key.get_name(), key)
        with _KNOWN_HOSTS_LOCK:
            store.parent.mkdir(parents=True, exist_ok=True)
            old = store.read_text(encoding="utf-8") if store.exists() else ""
            if old and not old.endswith("\n"):
                old += "\n"
            atomic_write_text(store, old + f"{hostname} {key.get_name()} {key.get_base64()}\n")
            os.chmod(store, 0o600)
        log.warning("%s: accepted new host key %s for %s, recorded in %s", self.device.name, fp, hostname, store)


def _transient(exc: BaseException) -> bool:
    """Network trouble worth retrying (the board may be booting); never auth or host-key failures."""
    if isinstance(exc, (paramiko.AuthenticationException, paramiko.BadHostKeyException, HostKeyError,
                        socket.gaierror)):
        return False
    return isinstance(exc, (OSError, EOFError, paramiko.SSHException))


@dataclass
class CommandResult:
    rc: int
    stdout: str
    stderr: str


class Connection:
    """One SSH connection to a board. Use as a context manager; :meth:`open` retries transient failures."""

    def __init__(self, device: Device, options: SSHOptions | None = None):
        self.device = device
        self.options = options or SSHOptions()
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._home: str | None = None

    # --- connecting ----------------------------------------------------------------------------
    def __enter__(self) -> "Connection":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> "Connection":
        """Connect (with up to ``retries`` retries and exponential backoff for network errors)."""
        d, o = self.device, self.options
        for attempt in range(o.retries + 1):
            try:
                self._client = self._connect_once()
                return self
            except Exception as exc:  # classified below; anything unexpected propagates unchanged
                message = self._explain(exc)
                if message is None:
                    raise
                if not _transient(exc) or attempt == o.retries:
                    tries = f" (after {attempt + 1} tries)" if attempt else ""
                    cls = (HostKeyError if isinstance(exc, (HostKeyError, paramiko.BadHostKeyException))
                           else AuthError if isinstance(exc, paramiko.AuthenticationException)
                           else ConnectionLost if isinstance(exc, _DroppedDuringLogin)  # a run reconnects again
                           else ConnectError)
                    params = exc.params if isinstance(exc, RemoteError) else ()  # arguments the fix names
                    text = message if params else literal(message)
                    raise cls(f"{literal(f'{d.name} ({d.address})')}: {text}{tries}", params=params) from None
                wait = min(o.backoff * 2 ** attempt, 30.0)
                log.info("%s: %s; retrying in %.1fs", d.name, message, wait)
                time.sleep(wait)
        raise AssertionError("unreachable")

    def _connect_once(self) -> paramiko.SSHClient:
        d, o = self.device, self.options
        client = paramiko.SSHClient()
        if o.system_known_hosts is not None and o.system_known_hosts.is_file():
            client.load_system_host_keys(str(o.system_known_hosts))
        if o.known_hosts.is_file():
            client.get_host_keys().load(str(o.known_hosts))
        client.set_missing_host_key_policy(_HostKeyPolicy(d, o))
        key = d.key_path
        if key is not None and not key.is_file():
            raise RemoteError(f"{d.name}: the inventory's key_file for this device does not exist")
        try:
            client.connect(d.host, port=d.port, username=d.user,
                           key_filename=str(key) if key is not None else None,
                           look_for_keys=key is None, allow_agent=True, timeout=o.connect_timeout,
                           banner_timeout=o.connect_timeout, auth_timeout=o.connect_timeout,
                           channel_timeout=o.connect_timeout)
        except paramiko.AuthenticationException as exc:
            transport = client.get_transport()
            dropped = transport is None or not transport.is_active()  # a refused key leaves the link up
            client.close()
            if dropped and not isinstance(exc, paramiko.PasswordRequiredException):
                raise _DroppedDuringLogin("connection dropped during login") from None
            raise
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(o.keepalive)
        log.info("%s: connected to %s", d.name, d.address)
        return client

    def _explain(self, exc: BaseException) -> str | None:
        """One-line reason for a connection failure, or None for an exception we do not know."""
        d = self.device
        if isinstance(exc, RemoteError):  # the message's template when it names arguments (see UserError.render)
            text = exc.template if exc.params else str(exc)
            return text.split(": ", 1)[-1] if text.startswith(d.name) else text
        if isinstance(exc, paramiko.BadHostKeyException):
            entry = d.host if d.port == 22 else f"[{d.host}]:{d.port}"  # how known_hosts names a non-22 port
            return (f"host key for {entry} differs from the recorded one (got {fingerprint(exc.key)}); the "
                    f"board was reinstalled or someone is intercepting the connection. If the change is expected, "
                    f"remove the old entry (ssh-keygen -R '{entry}' -f FILE) from "
                    f"{self.options.known_hosts} or ~/.ssh/known_hosts")
        if isinstance(exc, paramiko.PasswordRequiredException):
            return ("the inventory's key_file is passphrase-protected; load it into ssh-agent (ssh-add) - ofakit "
                    "never stores passphrases")
        if isinstance(exc, _DroppedDuringLogin):
            return "the connection dropped during login (the link, not the key)"
        if isinstance(exc, paramiko.AuthenticationException):
            how = "the inventory's key_file" if d.key_file else "ssh-agent / ~/.ssh keys"
            return (f"authentication failed for user {d.user!r} with {how}; add the public key to "
                    "~/.ssh/authorized_keys on the board (ssh-copy-id)")
        if isinstance(exc, socket.gaierror):
            return f"cannot resolve host name {d.host!r}"
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            return f"connection refused on port {d.port} (is sshd running and the port right?)"
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return f"no answer within {self.options.connect_timeout:g}s"
        if isinstance(exc, ConnectionRefusedError):
            return f"connection refused on port {d.port}"
        if isinstance(exc, OSError):
            return f"cannot connect ({exc.strerror or exc})"
        if isinstance(exc, (paramiko.SSHException, EOFError)):
            return f"SSH handshake failed ({exc or type(exc).__name__})"
        return None

    def close(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            except (OSError, EOFError, paramiko.SSHException):
                pass
            self._sftp = None
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def client(self) -> paramiko.SSHClient:
        if self._client is None:
            raise RuntimeError("connection is not open")
        return self._client

    def alive(self) -> bool:
        t = self._client.get_transport() if self._client is not None else None
        return bool(t and t.is_active())

    # --- commands ------------------------------------------------------------------------------
    def _channel(self, argv: Sequence[str], cwd: str | None, env: Mapping[str, str] | None) -> paramiko.Channel:
        line = command_line(argv, cwd, env)
        log.debug("%s: $ %s", self.device.name, line)
        try:
            transport = self.client.get_transport()
            if transport is None or not transport.is_active():
                raise ConnectionLost(f"{self.device.name}: connection to {self.device.address} is closed")
            chan = transport.open_session(timeout=self.options.connect_timeout)
            chan.exec_command(line)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise ConnectionLost(f"{self.device.name}: connection to {self.device.address} lost ({exc})") from None
        return chan

    def run(self, argv: Sequence[str], *, timeout: float | None = None, stdin: bytes | str | BinaryIO | None = None,
            cwd: str | None = None, env: Mapping[str, str] | None = None, check: bool = True) -> CommandResult:
        """Run a command to completion; raises :class:`RemoteCommandError` on a non-zero exit if ``check``."""
        out: list[str] = []
        rc, err = self._pump(argv, out.append, timeout=timeout, idle_timeout=None, stdin=stdin, cwd=cwd, env=env)
        res = CommandResult(rc, "".join(out), err)
        if check and rc != 0:
            tail = err.strip().splitlines()[-1] if err.strip() else f"exit status {rc}"
            raise RemoteCommandError(f"{self.device.name}: `{argv[0]}` failed: {tail}", rc, err)
        return res

    def stream(self, argv: Sequence[str], on_line: Callable[[str], None], *, timeout: float | None = None,
               idle_timeout: float | None = None, cwd: str | None = None,
               env: Mapping[str, str] | None = None) -> CommandResult:
        """Run a command and hand each stdout line to ``on_line`` as it arrives. ``idle_timeout``: seconds
        without any output after which the link is presumed dead (:class:`ConnectionLost`)."""
        buf: list[str] = []

        def feed(chunk: str) -> None:
            buf.append(chunk)
            if "\n" in chunk:
                text = "".join(buf)
                *lines, rest = text.split("\n")
                buf[:] = [rest] if rest else []
                for ln in lines:
                    on_line(ln)

        rc, err = self._pump(argv, feed, timeout=timeout, idle_timeout=idle_timeout, stdin=None, cwd=cwd, env=env)
        if buf and "".join(buf).strip():
            on_line("".join(buf))
        return CommandResult(rc, "", err)

    def _pump(self, argv: Sequence[str], sink: Callable[[str], None], *, timeout: float | None,
              idle_timeout: float | None, stdin: bytes | str | BinaryIO | None, cwd: str | None,
              env: Mapping[str, str] | None) -> tuple[int, str]:
        name = self.device.name
        timeout = self.options.command_timeout if timeout is None else timeout
        chan = self._channel(argv, cwd, env)
        err = bytearray()
        pending = b""
        try:
            if stdin is not None:
                self._send(chan, stdin, argv[0], timeout)
            start = last = time.monotonic()
            while True:
                select.select([chan], [], [], 0.2)
                got = False
                while chan.recv_ready():
                    data = chan.recv(65536)
                    if not data:
                        break
                    got = True
                    pending += data
                    text, pending = _split_utf8(pending)
                    if text:
                        sink(text)
                while chan.recv_stderr_ready():
                    got = True
                    err += chan.recv_stderr(65536)
                now = time.monotonic()
                if got:
                    last = now
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if chan.closed or not self.alive():
                    break
                if timeout and now - start > timeout:
                    raise RemoteTimeout(f"{name}: `{argv[0]}` ran past {timeout:g}s")
                if idle_timeout and now - last > idle_timeout:
                    raise ConnectionLost(f"{name}: no output from `{argv[0]}` for {idle_timeout:g}s; link presumed "
                                         "dead")
            if pending:
                sink(pending.decode("utf-8", "replace"))
            if not chan.exit_status_ready():
                raise ConnectionLost(f"{name}: connection to {self.device.address} lost while `{argv[0]}` ran")
            rc = chan.recv_exit_status()
            if rc == -1 and self._link_up():  # no exit status, link intact: the process died of a signal
                raise RemoteCommandError(f"{name}: `{argv[0]}` was killed by a signal on the board (out of memory? "
                                         "killed by hand?); the connection is fine", rc, err.decode("utf-8",
                                                                                                   "replace"))
            if rc == -1:
                raise ConnectionLost(f"{name}: connection to {self.device.address} lost while `{argv[0]}` ran")
            return rc, err.decode("utf-8", "replace")
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise ConnectionLost(f"{name}: connection to {self.device.address} lost ({exc})") from None
        finally:
            chan.close()

    def _link_up(self) -> bool:
        """Whether the connection still carries a command (a short ``true`` round trip)."""
        try:
            return self.run(["true"], timeout=self.options.connect_timeout, check=False).rc == 0
        except RemoteError:
            return False

    def _send(self, chan: paramiko.Channel, stdin: bytes | str | BinaryIO, what: str, timeout: float) -> None:
        """Feed ``stdin`` to a command; a command that exits early (e.g. not installed) just stops the feed."""
        data = stdin.encode() if isinstance(stdin, str) else stdin
        blocks = [data] if isinstance(data, bytes) else iter(lambda: data.read(1 << 16), b"")
        chan.settimeout(timeout or None)
        try:
            for block in blocks:
                chan.sendall(block)
            chan.shutdown_write()
        except socket.timeout:
            raise RemoteTimeout(f"{self.device.name}: sending input to `{what}` ran past {timeout:g}s") from None
        except (OSError, EOFError, paramiko.SSHException):
            if not self.alive():
                raise
        finally:
            chan.settimeout(None)

    # --- files ---------------------------------------------------------------------------------
    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            try:
                self._sftp = self.client.open_sftp()
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise ConnectionLost(f"{self.device.name}: cannot open SFTP ({exc})") from None
            self._sftp.get_channel().settimeout(self.options.upload_timeout)
        return self._sftp

    @property
    def home(self) -> str:
        """The login home folder on the board (where SSH commands and SFTP start)."""
        if self._home is None:
            try:
                self._home = self.sftp.normalize(".")
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise ConnectionLost(f"{self.device.name}: cannot read the home folder ({exc})") from None
        return self._home

    def expand(self, path: str) -> str:
        """An absolute board path: ``~``, ``~/x`` and relative paths are taken under the login home folder."""
        if path in ("~", "."):
            return self.home
        path = path[2:] if path.startswith("~/") else path
        return path if path.startswith("/") else posixpath.join(self.home, path)

    def python(self) -> str:
        """The board's interpreter: the inventory's ``python`` with a leading ``~/`` made absolute."""
        p = self.device.python
        return self.expand(p) if p.startswith("~") else p

    def remote_sha256(self, paths: Sequence[str]) -> dict[str, str | None]:
        """sha256 of each remote file (None when missing), in one round trip through the board's Python;
        creates the files' folders on the way (the upload that may follow needs them)."""
        if not paths:
            return {}
        res = self.run([self.python(), "-c", _SHA_SCRIPT], stdin="\n".join(paths) + "\n")
        try:
            return json.loads(res.stdout)
        except json.JSONDecodeError:
            raise RemoteError(f"{self.device.name}: unexpected output from the hash check: "
                              f"{res.stdout[:80]!r}") from None

    def sync(self, files: Iterable[tuple[Path, str]]) -> int:
        """Upload each ``(local, remote)`` pair whose remote sha256 differs; returns how many were sent.
        Each file goes to a temp name first and is renamed into place, so a dropped link leaves no torn file."""
        pairs = list(files)
        remote_hash = self.remote_sha256([r for _, r in pairs])
        todo = [(lp, r) for lp, r in pairs if remote_hash.get(r) != sha256_file(lp)]
        n_sent = len(todo)
        if len(todo) >= TAR_THRESHOLD:
            self._send_tar(todo)
            todo = []
        for lp, r in todo:
            tmp = f"{r}.part"
            try:
                self.sftp.put(str(lp), tmp)
                self.sftp.posix_rename(tmp, r)
            except socket.timeout:
                raise RemoteTimeout(f"{self.device.name}: upload of {lp.name} ran past "
                                    f"{self.options.upload_timeout:g}s") from None
            except (OSError, EOFError, paramiko.SSHException) as exc:
                if not self.alive():
                    raise ConnectionLost(f"{self.device.name}: connection lost during upload ({exc})") from None
                raise RemoteError(f"{self.device.name}: cannot upload {lp.name} to {r} ({exc})") from None
        log.info("%s: uploaded %d of %d files", self.device.name, n_sent, len(pairs))
        return n_sent

    def _send_tar(self, todo: Sequence[tuple[Path, str]]) -> None:
        """Many files in one round trip: a tar stream into ``tar -x`` on the board (per-file SFTP costs a few
        round trips each). A file torn by a reboot mid-extraction fails the next hash check and is re-sent."""
        root = posixpath.commonpath([posixpath.dirname(r) for _, r in todo]) or "/"
        with tempfile.TemporaryFile() as buf:
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for lp, r in todo:
                    info = tar.gettarinfo(str(lp), arcname=posixpath.relpath(r, root))
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    with open(lp, "rb") as f:
                        tar.addfile(info, f)
            buf.seek(0)
            self.run(["tar", "-x", "-f", "-", "-C", root], stdin=buf, timeout=self.options.upload_timeout)

    def read_text(self, remote: str) -> str | None:
        """Contents of a remote text file, or None when it does not exist."""
        try:
            with self.sftp.open(remote, "r") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if not self.alive():
                raise ConnectionLost(f"{self.device.name}: connection lost reading {remote} ({exc})") from None
            raise RemoteError(f"{self.device.name}: cannot read {remote} ({exc})") from None

    def make_temp_dir(self, parent: str, *also: str, tag: str = "") -> str:
        """A fresh private folder ``ofakit.[TAG.]XXXXXXXX`` under ``parent`` on the board (``mktemp -d``); the
        folders ``also`` are created on the way (one round trip). Folders of earlier sessions with the same
        ``tag`` (one run: its earlier sessions are over) and any left by sessions over an hour ago are removed
        first."""
        prefix = f"ofakit.{tag}." if tag else "ofakit."
        script = ('p=$1; t=$2; shift 2; mkdir -p "$p" "$@" && { '
                  'find "$p" -mindepth 1 -maxdepth 1 -name "ofakit.*" -mmin +60 -exec rm -rf {} + 2>/dev/null; '
                  '[ "$t" = ofakit. ] || find "$p" -mindepth 1 -maxdepth 1 -name "$t*" -exec rm -rf {} + 2>/dev/null; '
                  'mktemp -d "$p/${t}XXXXXXXX"; }')
        return self.run(["sh", "-c", script, "sh", parent.rstrip("/") or "/", prefix, *also]).stdout.strip()

    def remove_tree(self, *paths: str) -> None:
        self.run(["rm", "-rf", "--", *paths])


def _split_utf8(data: bytes) -> tuple[str, bytes]:
    """Decode what is complete; keep a trailing partial UTF-8 sequence for the next chunk."""
    for cut in range(len(data), max(len(data) - 4, -1), -1):
        try:
            return data[:cut].decode("utf-8"), data[cut:]
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", "replace"), b""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_SHA_SCRIPT = """\
import hashlib, json, os, sys
out = {}
for p in sys.stdin.read().splitlines():
    d = os.path.dirname(p)
    if d and not os.path.isdir(d):
        os.makedirs(d)
    try:
        h = hashlib.sha256()
        with open(p, 'rb') as f:
            for b in iter(lambda: f.read(1 << 20), b''):
                h.update(b)
        out[p] = h.hexdigest()
    except OSError:
        out[p] = None
print(json.dumps(out))
"""
