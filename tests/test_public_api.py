"""The one public namespace: every name of ``ofakit.__all__`` resolves, importing ofakit loads nothing heavy,
and the Python API page's search snippet runs as written."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ACC_PATH = ROOT.parent / "shared" / "data" / "ofa_acc_predictor" / "acc_predictor.pth"


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(cwd)})


def test_every_public_name_resolves_and_import_is_light(tmp_path):
    code = ("import sys, ofakit\n"
            "heavy = [m for m in ('torch', 'sklearn', 'pandas', 'onnxruntime', 'paramiko') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "missing = [n for n in ofakit.__all__ if getattr(ofakit, n, None) is None]\n"
            "assert not missing, missing\n"
            "assert set(ofakit.__all__) <= set(dir(ofakit))\n"
            "print(len(ofakit.__all__))\n")
    p = run_python(code, tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert int(p.stdout) >= 40


def test_cli_help_does_not_import_the_heavy_libraries(tmp_path):
    code = ("import sys\nfrom ofakit.cli import main\nmain(['--help'])\n"
            "print([m for m in ('torch', 'sklearn', 'pandas') if m in sys.modules])\n")
    p = run_python(code, tmp_path)
    assert p.returncode == 0 and p.stdout.strip().splitlines()[-1] == "[]", p.stdout + p.stderr


def test_the_python_api_page_snippet_runs_as_written(tmp_path):
    text = (ROOT / "docs" / "python-api.md").read_text(encoding="utf-8")
    (snippet,) = re.findall(r"```python\n(.*?)```", text, re.S)
    assert "from ofakit import" in snippet and "ofakit." not in snippet.replace("from ofakit import", "")
    (tmp_path / "acc_predictor.pth").symlink_to(ACC_PATH)  # OFA's released accuracy predictor
    p = run_python(snippet, tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    m = re.match(r"(\d+\.\d+)% top-1 at (\d+\.\d+) ms \(budget (\d+\.\d+) ms\): \{", p.stdout)
    assert m and 70 < float(m.group(1)) < 90 and float(m.group(2)) <= float(m.group(3))
