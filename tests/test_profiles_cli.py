"""`ofakit profiles list | show | compare` on the shipped profiles and a user profile."""
from __future__ import annotations

import json
from pathlib import Path

from ofakit.device_profiles import store

LUT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ofa_note10_lut"


def test_list_show_compare(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("OFAKIT_PROFILE_DIR", str(tmp_path / "mine"))
    assert cli("profile", "import-ofa", str(LUT_DIR), "--name", "phone", "--width", "1.2").returncode == 0
    r = cli("profiles", "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["name", "device", "backend"]
    row = {ln.split()[0]: ln for ln in lines[1:]}
    assert "measured" in row["cpu-onnxruntime-1t"] and "shipped" in row["cpu-onnxruntime-1t"]
    assert "n=100 ±10%:" in row["cpu-onnxruntime-1t"]
    assert "imported" in row["note10"] and "1.2" in row["note10"] and "yours" in row["phone"]
    rows = [json.loads(ln) for ln in cli("profiles", "list", "--json").stdout.splitlines()]
    assert {r["name"]: r["emulated"] for r in rows}["note10"] == "no"
    assert {r["name"]: r["path"] for r in rows}["phone"] == str(store.user_dir() / "phone")

    r = cli("profiles", "show", "cpu-onnxruntime-1t")
    assert r.returncode == 0 and "default predictor  calibrated" in r.stdout and "operators          1257" in r.stdout

    r = cli("profiles", "compare", "note10", "phone", "--n", "200", "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert "ratio phone / note10: median 1.000, 10-90% 1.000..1.000" in r.stdout and "Spearman" in r.stdout
    # a device twice as slow on every op: ratio 2 everywhere, the same ranking
    from dataclasses import replace

    from ofakit.device_profiles import Profile, ProfileMeta, load_profile

    n10 = load_profile("note10")
    slow = Profile(ProfileMeta(**{**vars(n10.meta), "name": "slow"}), [replace(e, ms=2 * e.ms) for e in n10])
    slow.save()
    r = cli("profiles", "compare", "note10", "slow", "--n", "300")
    assert "ratio slow / note10: median 2.000, 10-90% 2.000..2.000" in r.stdout
    assert "Spearman (same ranking = 1): 1.0000" in r.stdout
    r = cli("profiles", "compare", "note10", "cpu-onnxruntime-1t")
    assert r.returncode == 2 and "different supernets" in r.stderr and r.stderr.count("\n") == 1
    r = cli("profiles", "show", "nope")
    assert r.returncode == 2 and "no device profile 'nope'" in r.stderr
