"""What profiling over SSH costs and whether it changes the numbers, with this machine as its own "board".

Starts a real sshd on 127.0.0.1 (tests/sshd.py), builds the 96 ops of one resolution, then in one run:
- upload: all models into an empty work folder as one tar stream vs one SFTP transfer per file, and the
  hash check alone when nothing changed;
- timing: the same ops measured by the local runner and by the SSH runner, alternating (L, S, L, S), each a
  2-round job; per-op ratio SSH / local of the op value (min over rounds of round medians) and the wall time of
  each job (the SSH job includes connecting, the hash check, the probes and the journal copy).
Prints a table and appends it to BENCHMARKS.md.

    python bench/remote_overhead.py [--resolution 160] [--no-append]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _report import append_section, machine  # noqa: E402
from sshd import SSHServer, inventory_text, trust  # noqa: E402

from ofakit.ofa_core.ops import resolution_ops  # noqa: E402
from ofakit.ofa_core.space import space_for_width  # noqa: E402
from ofakit.profiler.agent import ofakit_agent as agent  # noqa: E402
from ofakit.profiler.backends import get_backend  # noqa: E402
from ofakit.profiler.builder import Builder  # noqa: E402
from ofakit.profiler.items import Item  # noqa: E402
from ofakit.profiler.remote import ssh as ssh_mod  # noqa: E402
from ofakit.profiler.remote.inventory import load_inventory  # noqa: E402
from ofakit.profiler.remote.runner import SSHRunner  # noqa: E402
from ofakit.profiler.remote.ssh import Connection, ssh_options  # noqa: E402
from ofakit.profiler.runner import LocalRunner  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=160)
    p.add_argument("--no-append", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ofakit-bench-") as folder:
        run(args, Path(folder))


def run(args: argparse.Namespace, tmp: Path) -> None:
    os.environ["OFAKIT_KNOWN_HOSTS"] = str(tmp / "known_hosts")
    backend = get_backend("onnxruntime")
    items = [Item.op(o) for o in resolution_ops(space_for_width(1.0), args.resolution)]
    built = Builder(backend).build(items)
    models = {i: b.path for i, b in built.items() if b.ok}
    size_mb = sum(os.path.getsize(m) for m in models.values()) / 1e6
    job = agent.JobSettings(agent.TimingSettings(warmup_runs=2, warmup_s=0.005, min_runs=5, min_s=0.03),
                            rounds=2, extra_rounds=0, timeout_s=60)
    rows: list[tuple[str, str]] = []
    with SSHServer(tmp / "sshd") as srv:
        trust(srv, tmp / "known_hosts")
        (tmp / "devices.yaml").write_text(inventory_text({"self": srv}))
        dev = load_inventory(tmp / "devices.yaml").get("self")
        with Connection(dev, ssh_options()) as conn:
            t0 = time.perf_counter()
            conn.run(["true"])
            rows.append(("one remote command (round trip)", f"{time.perf_counter() - t0:.3f} s"))
            for label, threshold, folder in (("tar stream", ssh_mod.TAR_THRESHOLD, "a"),
                                             ("SFTP per file", 10 ** 9, "b")):
                ssh_mod.TAR_THRESHOLD = threshold
                pairs = [(Path(m), str(tmp / "up" / folder / Path(m).name)) for m in models.values()]
                t0 = time.perf_counter()
                sent = conn.sync(pairs)
                rows.append((f"upload {sent} models ({size_mb:.1f} MB), {label}", f"{time.perf_counter() - t0:.2f} s"))
            t0 = time.perf_counter()
            conn.sync(pairs)
            rows.append(("hash check only (nothing changed)", f"{time.perf_counter() - t0:.2f} s"))
        local, remote, walls = [], [], {"local": [], "ssh": []}
        for k in range(2):
            for kind in ("local", "ssh"):
                journal = tmp / f"{kind}{k}.jsonl"
                runner = (LocalRunner(backend, 1) if kind == "local"
                          else SSHRunner(dev, backend, ssh_options(), poll_s=2.0))
                t0 = time.perf_counter()
                summ = runner.measure(models, journal, job)
                walls[kind].append(time.perf_counter() - t0)
                (local if kind == "local" else remote).append({i: s.ms for i, s in summ.items() if s.ok})
    ids = sorted(set.intersection(*(set(d) for d in local + remote)))
    best = lambda runs: np.array([min(r[i] for r in runs) for i in ids])  # noqa: E731
    ratio = best(remote) / best(local)
    same = np.array([local[1][i] for i in ids]) / np.array([local[0][i] for i in ids])
    rows += [
        (f"ops measured (r={args.resolution})", str(len(ids))),
        ("job wall time local / SSH (2 rounds, each)", " / ".join(
            f"{np.mean(walls[k]):.1f} s" for k in ("local", "ssh"))),
        ("per-op value SSH / local: median [p10, p90]",
         f"{np.median(ratio):.3f} [{np.percentile(ratio, 10):.3f}, {np.percentile(ratio, 90):.3f}]"),
        ("per-op value local run 2 / run 1: median [p10, p90]",
         f"{np.median(same):.3f} [{np.percentile(same, 10):.3f}, {np.percentile(same, 90):.3f}]"),
    ]
    width = max(len(r[0]) for r in rows)
    table = "\n".join(f"| {a:<{width}} | {b} |" for a, b in rows)
    body = (f"Machine: {machine()}. onnxruntime, 1 thread, this machine as its own board over SSH to 127.0.0.1 "
            f"(`bench/remote_overhead.py --resolution {args.resolution}`).\n\n| {'what':<{width}} | figure |\n"
            f"|{'-' * (width + 2)}|--------|\n{table}\n")
    print(body)
    if not args.no_append:
        append_section("SSH profiling overhead (profiler.remote)", body)


if __name__ == "__main__":
    main()
