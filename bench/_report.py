"""Shared by the bench scripts: machine description and appending a dated section to BENCHMARKS.md."""
from __future__ import annotations

import os
import platform
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"


def machine() -> str:
    """One line: CPU model, cores, load average now."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "load unknown"
    return f"{model}, {os.cpu_count()} cores, {load}"


def append_section(title: str, body: str) -> None:
    """Append ``## title (date)`` + ``body`` to BENCHMARKS.md (one write, so sections never interleave)."""
    stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    text = f"\n## {title} — {stamp}\n\n{body.rstrip()}\n"
    with open(BENCHMARKS, "a", encoding="utf-8") as f:
        f.write(text)
    print(f"appended '{title}' to {BENCHMARKS}")
