"""The SSH runner: measures model files on a board with the agent file, same interface as the local runner.

:class:`SSHRunner` has the local runner's ``measure(models, journal, job, progress) -> {id: Summary}`` and
``environment()``, so every profiling and validation path drives a board exactly as it drives this CPU: the
host builds model files (the profiler's Builder), the runner uploads what changed (sha256-checked), starts
``ofakit_agent.py measure`` over SSH (under ``taskset`` when the inventory says so) and streams its progress.

Nothing measured is lost:
- the agent journals every (item, round) on the board (fsynced) as it goes; while it runs the host copies new
  journal lines into its own journal (the ``journal`` path given to :meth:`SSHRunner.measure`);
- at the start of every session the board's journal and the host's are merged line by line (no duplicates) and
  the union goes back to the board, so a re-run after a dropped link, a reboot or a re-imaged board resumes
  from whatever either side holds;
- a dropped link is retried (``reconnects`` times, exponential backoff); when that fails the error says to re-run.

Per batch of results (each journal poll) the host also records the board's temperatures, clock and throttle
flags, read from sysfs over SFTP (no process on the board competes with the measurement), into
``<journal>.state.jsonl``; ``vcgencmd get_throttled`` is read by the probe before and after the run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import paramiko

from ofakit.device_profiles import atomic_write_text
from ofakit.ofa_core.direct import PACKED_SUFFIX
from ofakit.profiler.agent import AGENT_FILE
from ofakit.profiler.agent import ofakit_agent as agent

from .check import run_probe
from .inventory import Device
from .probe import parse_throttled
from .ssh import Connection, ConnectionLost, RemoteError, SSHOptions

log = logging.getLogger("ofakit.remote")

# Kills an agent left over from a dropped session (it would otherwise share the journal), records the new
# agent's PID and execs it; "$@" is the agent command line, every part quoted by the host.
_LAUNCH = r"""pidf=$1; shift
if [ -f "$pidf" ]; then
  old=$(cat "$pidf")
  if [ -n "$old" ] && kill -0 "$old" 2>/dev/null && grep -q ofakit_agent "/proc/$old/cmdline" 2>/dev/null; then
    kill "$old" 2>/dev/null; sleep 1; kill -9 "$old" 2>/dev/null
  fi
fi
echo $$ > "$pidf"
exec "$@" 2>&1
"""
_PROGRESS_RE = re.compile(r"^\[(\d+)/(\d+)\] round (\d+) ")
_STATE_FILES = {"throttled": "/sys/devices/platform/soc/soc:firmware/get_throttled",
                "cpu0_khz": "/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq"}

Event = Callable[[str, dict], None]


def merge_journals(first: str, second: str) -> str:
    """Union of two journal texts: ``first``'s complete lines in order, then ``second``'s lines that ``first``
    lacks (one header only). A torn last line (a writer killed mid-line) is dropped."""
    def lines(text: str) -> list[str]:
        body = text[: text.rfind("\n") + 1] if "\n" in text else ""
        return [ln for ln in body.split("\n") if ln.strip()]

    a, b = lines(first), lines(second)
    seen = set(a)
    has_header = any(_is_header(ln) for ln in a)
    out = list(a)
    for ln in b:
        if ln in seen or (has_header and _is_header(ln)):
            continue
        seen.add(ln)
        has_header = has_header or _is_header(ln)
        out.append(ln)
    header = [ln for ln in out if _is_header(ln)][:1]
    return "".join(ln + "\n" for ln in header + [ln for ln in out if not _is_header(ln)])


def _is_header(line: str) -> bool:
    return line.startswith("{") and '"type": "header"' in line


class SSHRunner:
    """Measures on ``device`` (inventory entry) with ``backend`` (a profiler backend) over SSH."""

    def __init__(self, device: Device, backend: Any, options: SSHOptions | None = None, reconnects: int = 3,
                 poll_s: float = 2.0, state_s: float = 10.0, on_event: Event | None = None,
                 threads: int | None = None):
        self.device = device
        self.backend = backend
        self.threads = int(threads or device.threads)
        self.options = options or SSHOptions()
        self.reconnects = reconnects
        self.poll_s, self.state_s = poll_s, state_s
        self.on_event = on_event
        self._env: dict[str, Any] | None = None
        self.thermal: dict[str, Any] | None = None
        self._env_out: dict[str, Any] | None = None

    # --- the runner interface -------------------------------------------------------------------
    def measure(self, models: Mapping[str, str], journal: str | os.PathLike, job: agent.JobSettings,
                progress: agent.Progress | None = None) -> dict[str, agent.Summary]:
        """Time ``models`` ({item id: host model path}) on the board; journal to ``journal`` on the host."""
        journal = Path(journal)
        journal.parent.mkdir(parents=True, exist_ok=True)
        run_id = self._run_id(journal)
        journal.touch()
        lost = 0
        while True:
            try:
                with Connection(self.device, self.options) as conn:
                    self._session(conn, dict(models), journal, job, progress, run_id)
                break
            except ConnectionLost as exc:
                lost += 1
                if lost > self.reconnects:
                    raise RemoteError(f"{exc}; results so far are kept in {journal} and on the board: re-run the "
                                      "same command to resume") from None
                wait = min(self.options.backoff * 2 ** (lost - 1), 30.0)
                self._emit("reconnect", {"error": str(exc), "attempt": lost, "wait_s": wait})
                time.sleep(wait)
        _, results = agent.read_results(str(journal))
        summ = agent.summarize(r for r in results if r.id in models)
        return {i: summ[i] for i in sorted(models) if i in summ}

    def environment(self) -> dict[str, Any]:
        """The board's environment (the agent's ``env`` plus board model and throttle flags); nothing secret (no
        key paths). The returned dict gains a ``thermal`` record as :meth:`measure` runs (the pipeline asks for
        the environment before measuring and stores that dict in the profile)."""
        if self._env is None:
            with Connection(self.device, self.options) as conn:
                paths = self._paths(conn)
                conn.sync([(AGENT_FILE, paths["agent"])])
                res = conn.run([conn.python(), "-I", paths["agent"], "env", "--backend", self.backend.name,
                                "--threads", str(self.threads)], check=False)
                try:
                    env = json.loads(res.stdout.strip().splitlines()[-1]) if res.rc == 0 else None
                except (IndexError, ValueError):
                    env = None
                if not isinstance(env, dict):
                    raise RemoteError(f"{self.device.name}: the agent cannot start under {conn.python()!r}: "
                                      f"{_last_line(res.stderr or res.stdout)} (see ofakit devices check "
                                      f"{self.device.name})")
                info = run_probe(conn, "full")
            env.update(device=self.device.describe(), board=info["cpu"]["board"], throttled=info["state"]["throttled"],
                       temperatures_c=info["state"]["temperatures_c"], transport="ssh")
            self._env = env
        env = dict(self._env)
        self._env_out = env
        return env

    # --- one SSH session ------------------------------------------------------------------------
    def _paths(self, conn: Connection) -> dict[str, str]:
        wd = conn.expand(self.device.workdir)
        return {"workdir": wd, "agent": posixpath.join(wd, "agent", "ofakit_agent.py"),
                "models": posixpath.join(wd, "models"), "runs": posixpath.join(wd, "runs"),
                "tmp": posixpath.join(wd, "tmp")}

    def _emit(self, kind: str, data: dict) -> None:
        log.debug("%s: %s %s", self.device.name, kind, data)
        if self.on_event is not None:
            self.on_event(kind, dict(data, device=self.device.name))

    def _run_id(self, journal: Path) -> str:
        """The board folder paired with ``journal``: ``<hash of device and journal>-<nonce>``, kept beside the
        journal (``<journal>.board``). No host journal means a fresh start (first run, or ``--fresh``): a new
        nonce, so no result of an older run on the board can come back, however early this run is stopped."""
        base = hashlib.sha1(f"{self.device.name}\0{journal.resolve()}".encode()).hexdigest()[:16]
        pair = journal.with_name(journal.name + ".board")
        old = pair.read_text(encoding="utf-8").strip() if pair.is_file() and journal.exists() else ""
        run_id = old if old.startswith(base + "-") else f"{base}-{secrets.token_hex(4)}"
        if run_id != old:
            atomic_write_text(pair, run_id + "\n")
        return run_id

    def _session(self, conn: Connection, models: dict[str, str], journal: Path, job: agent.JobSettings,
                 progress: agent.Progress | None, run_id: str) -> None:
        p = self._paths(conn)
        run_dir = posixpath.join(p["runs"], run_id)
        board_journal = posixpath.join(run_dir, "results.jsonl")
        base = run_id.split("-")[0]
        # earlier runs of this journal (before a --fresh) and earlier sessions' temp folders of this run go first
        conn.run(["sh", "-c", 'for d in "$1/$2"-*; do [ "$d" = "$1/$3" ] || rm -rf -- "$d"; done', "sh",
                  p["runs"], base, run_id])
        tmp = conn.make_temp_dir(p["tmp"], run_dir, tag=base)
        cleanup = [tmp]
        try:
            self._emit("upload", {"files": len(models) + 1})
            remote_models = {i: posixpath.join(p["models"], os.path.basename(m)) for i, m in models.items()}
            # a model built with its packed form (weights left out, ofa_core.direct.pack) is sent packed: the
            # agent writes the model file from it on the board
            packed = {i: m + PACKED_SUFFIX for i, m in models.items() if os.path.exists(m + PACKED_SUFFIX)}
            uploads = [(Path(packed.get(i, models[i])), remote_models[i] + (PACKED_SUFFIX if i in packed else ""))
                       for i in models]
            sent = conn.sync([(AGENT_FILE, p["agent"])] + uploads)
            self._emit("uploaded", {"sent": sent, "files": len(models) + 1})
            ops_file = posixpath.join(tmp, "ops.jsonl")
            lines = [{"id": i, "model": remote_models[i],
                      **({"packed": remote_models[i] + PACKED_SUFFIX} if i in packed else {})} for i in models]
            self._put_text(conn, "".join(json.dumps(rec) + "\n" for rec in lines), ops_file)
            offset = self._merge_journals(conn, journal, board_journal)
            before = run_probe(conn, "state")
            self._record_state(journal, "before", before)
            tail = _Tail(conn, journal, board_journal, offset, progress, job.rounds * len(models))
            argv = ["sh", "-c", _LAUNCH, "sh", posixpath.join(run_dir, "agent.pid")]
            if self.device.taskset:
                argv += ["taskset", "-c", self.device.taskset]
            argv += [conn.python(), "-I", p["agent"], "measure", "--models", p["models"], "--ops", ops_file,
                     "--out", board_journal, *job_args(job), "--backend", self.backend.name,
                     "--threads", str(self.threads)]
            output: list[str] = []
            count = {"done": 0, "base": 0, "poll": 0.0, "state": time.monotonic()}

            def on_line(line: str) -> None:
                output.append(line)
                del output[:-20]
                m = _PROGRESS_RE.match(line)
                if m:  # "[k/n] round r id value": k restarts at 1 for the extra rounds
                    k, n = int(m.group(1)), int(m.group(2))
                    if k == 1:
                        count["base"] = count["done"]
                    count["done"] += 1
                    self._emit("result", {"done": count["done"], "total": count["base"] + n})
                now = time.monotonic()
                if now - count["poll"] >= self.poll_s:
                    count["poll"] = now
                    tail.poll()
                if now - count["state"] >= self.state_s:
                    count["state"] = now
                    self._record_state(journal, "batch", self._sysfs_state(conn), done=count["done"])

            self._emit("measure", {"items": len(models)})
            res = conn.stream(argv, on_line, timeout=0, idle_timeout=job.timeout_s + 180.0)
            tail.poll()
            if res.rc != 0:
                why = next((ln for ln in reversed(output) if "error" in ln.lower()), _last_line("\n".join(output)))
                raise RemoteError(f"{self.device.name}: the agent failed (exit {res.rc}): {why}")
            self._record_state(journal, "after", run_probe(conn, "state"))
            cleanup.append(run_dir)  # the host journal now holds every line of the board's
        finally:
            if conn.alive():
                try:
                    conn.remove_tree(*cleanup)
                except RemoteError:
                    pass

    def _put_text(self, conn: Connection, text: str, remote: str) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8") as f:
            f.write(text)
        try:
            conn.sftp.put(f.name, remote + ".part")
            conn.sftp.posix_rename(remote + ".part", remote)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise ConnectionLost(f"{self.device.name}: upload of {posixpath.basename(remote)} failed ({exc})") from None
        finally:
            os.unlink(f.name)

    def _merge_journals(self, conn: Connection, journal: Path, board_journal: str) -> int:
        """Make the host and board journals both hold the union of their lines; returns the board journal's
        size."""
        host_text = journal.read_text(encoding="utf-8")
        board_text = conn.read_text(board_journal)
        merged = merge_journals(host_text, board_text or "")
        if merged != host_text:
            atomic_write_text(journal, merged)
        if merged != (board_text or ""):
            self._put_text(conn, merged, board_journal)
        return len(merged.encode())

    def _sysfs_state(self, conn: Connection) -> dict[str, Any]:
        """Temperatures, clock and throttle flags read over SFTP (sysfs files; absent ones are skipped)."""
        out: dict[str, Any] = {"temperatures_c": {}}
        try:
            zones = sorted(n for n in conn.sftp.listdir("/sys/class/thermal") if n.startswith("thermal_zone"))
        except (OSError, EOFError, paramiko.SSHException):
            zones = []
        def read(path: str) -> str | None:  # a sensor that cannot be read right now is skipped, not fatal
            try:
                return conn.read_text(path)
            except ConnectionLost:
                raise
            except RemoteError:
                return None

        for z in zones:
            raw, kind = (read(f"/sys/class/thermal/{z}/{f}") for f in ("temp", "type"))
            if raw and raw.strip().lstrip("-").isdigit():
                out["temperatures_c"][(kind or z).strip()] = round(int(raw) / 1000.0, 1)
        for name, path in _STATE_FILES.items():
            raw = read(path)
            if raw is None or not raw.strip():
                continue
            if name == "throttled":
                try:
                    out["throttled"] = parse_throttled("throttled=0x" + raw.strip().removeprefix("0x"))
                except ValueError:
                    continue
            elif raw.strip().isdigit():
                out["cpu0_mhz"] = int(raw) // 1000
        return out

    def _record_state(self, journal: Path, when: str, state: dict[str, Any], done: int | None = None) -> None:
        rec = {"time": time.time(), "when": when, **({"done": done} if done is not None else {}), **state}
        path = journal.with_name(journal.name + ".state.jsonl")
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
        self.thermal = summarize_states(path)
        if self._env_out is not None:
            self._env_out["thermal"] = self.thermal
        self._emit("state", rec)


class _Tail:
    """Copies new complete lines of the board's journal into the host journal and reports progress."""

    def __init__(self, conn: Connection, journal: Path, board_journal: str, offset: int,
                 progress: agent.Progress | None, total: int):
        self.conn, self.journal, self.board_journal, self.offset = conn, journal, board_journal, offset
        self.progress = progress
        self.seen = set(journal.read_text(encoding="utf-8").splitlines()) if journal.exists() else set()
        self.done = 0
        self.total = total

    def poll(self) -> None:
        try:
            with self.conn.sftp.open(self.board_journal, "r") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise ConnectionLost(f"{self.conn.device.name}: cannot read the board's journal ({exc})") from None
        cut = data.rfind(b"\n") + 1
        if not cut:
            return
        self.offset += cut
        new = [ln for ln in data[:cut].decode("utf-8", "replace").split("\n") if ln.strip() and ln not in self.seen]
        if not new:
            return
        with open(self.journal, "a", encoding="utf-8") as f:
            f.write("".join(ln + "\n" for ln in new))
            f.flush()
            os.fsync(f.fileno())
        self.seen.update(new)
        for ln in new:
            try:
                rec = json.loads(ln)
            except ValueError:
                continue
            if rec.get("type") != "result":
                continue
            self.done += 1
            if self.progress is not None:
                self.progress(self.done, max(self.total, self.done), agent.MeasureResult.from_dict(rec))


def job_args(job: agent.JobSettings) -> list[str]:
    """The agent's ``measure`` options for ``job``."""
    t = job.timing
    args = ["--rounds", job.rounds, "--extra-rounds", job.extra_rounds, "--warmup-runs", t.warmup_runs,
            "--warmup-time", t.warmup_s, "--min-runs", t.min_runs, "--min-time", t.min_s, "--clock", t.clock,
            "--timeout", job.timeout_s,
            "--cv-threshold", job.cv_threshold, "--spread-threshold", job.spread_threshold, "--seed", job.seed,
            "--subnet-rounds", job.subnet_rounds]
    return [repr(a) if isinstance(a, float) else str(a) for a in args] + (["--retry-errors"] if job.retry_errors
                                                                          else [])


def summarize_states(path: Path) -> dict[str, Any]:
    """Thermal record of a run: samples, hottest temperature, whether the board throttled at any point."""
    samples = [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    temps = [max(s["temperatures_c"].values()) for s in samples if s.get("temperatures_c")]
    flags = [s["throttled"] for s in samples if s.get("throttled")]
    return {"samples": len(samples), "max_temp_c": max(temps) if temps else None,
            "throttled_during_run": any(f.get("throttled") or f.get("freq_capped") or f.get("under_voltage")
                                        for f in flags) if flags else None,
            "throttle_readings": len(flags), "state_file": path.name}


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"

