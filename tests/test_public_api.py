"""The one public namespace: every name of ``ofakit.__all__`` resolves, importing ofakit loads nothing heavy,
and the Python API page's search snippet runs as written."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
    p = run_python(snippet, tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    m = re.match(r"(\d+\.\d+)% top-1 at (\d+\.\d+) ms \(budget (\d+\.\d+) ms\): \{", p.stdout)
    assert m and 70 < float(m.group(1)) < 90 and float(m.group(2)) <= float(m.group(3))


def test_the_readme_snippet_runs_as_written_and_finds_ofas_subnet(tmp_path):
    (snippet,) = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    assert "from ofakit import" in snippet and "ofakit." not in snippet.replace("from ofakit import", "")
    p = run_python(snippet, tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    acc, arch = p.stdout.split(" ", 1)
    assert 0.80 < float(acc) < 0.84 and '"width": 1.2' in arch  # OFA's tutorial: 81.7% under 25 ms on a Note10


def test_tables_are_dataframes_and_files_stay_csv_json(tmp_path):
    import json

    import numpy as np

    from ofakit import SearchConfig, build_constraints, front_frame, load_accuracy_frame, load_profile, sample_archs, sweep

    prof = load_profile("cpu-onnxruntime-1t")
    lut = prof.to_frame()
    from ofakit.device_profiles import LUT_COLUMNS

    assert len(lut) == len(prof) and list(lut.columns) == list(LUT_COLUMNS)
    assert lut.attrs["name"] == prof.name and lut.attrs["backend"] == prof.meta.backend
    assert np.allclose(lut["ms"].to_numpy(), [s.ms for s in prof])

    archs = sample_archs(5, prof, seed=3)
    lines = [json.dumps({**a.to_ofa_dict(), "width": a.width, "acc": 0.7 + i / 100})
             for i, a in enumerate(archs.to_configs())]
    (tmp_path / "acc.jsonl").write_text("\n".join(lines) + "\n")
    acc = load_accuracy_frame(tmp_path / "acc.jsonl")
    assert list(acc.columns) == ["ks", "e", "d", "r", "width", "acc"] and len(acc) == 5
    assert acc["acc"].tolist() == [0.7 + i / 100 for i in range(5)] and acc["r"].tolist() == list(archs.r)

    class Bigger:  # an accuracy stand-in that prefers big subnets (the frame is what is tested here)
        def predict(self, b):
            return np.asarray(b.e, dtype=float).sum(axis=1) / 200

    constraints, w = build_constraints([prof.name], [], resolutions=(160, 192, 224), sweep=True)
    results = sweep(Bigger(), constraints, [3.0, 5.0], 0, SearchConfig(population=20, generations=3, width=w,
                                                                         resolutions=(160, 192, 224)))
    front = front_frame(results, [3.0, 5.0])
    assert list(front["bound"]) == [3.0, 5.0] and front["accuracy"].is_monotonic_increasing
    assert (front[f"latency[{prof.name}]"] <= front["bound"]).all() and front["arch"].str.startswith("{").all()
