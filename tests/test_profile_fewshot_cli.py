"""`ofakit profile cpu --few-shot N`: real end-to-end measurements on this CPU, then a saved few-shot predictor."""
from __future__ import annotations

import json
from pathlib import Path

from ofakit.cli import main


def test_few_shot_profile_measures_and_saves_a_predictor(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("OFAKIT_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "fs"
    assert main(["profile", "cpu", "--few-shot", "4", "--seed", "2", "--out", str(out)]) == 0
    assert (out / "predictor.json").is_file()
    arch = tmp_path / "a.json"
    arch.write_text(json.dumps({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": [160]}))
    capsys.readouterr()
    assert main(["predict", str(arch), "--predictor", str(out)]) == 0
    ms = float(capsys.readouterr().out.split()[0])
    assert 0.1 < ms < 1000


def test_few_shot_needs_enough_subnets_one_line(capsys) -> None:
    assert main(["profile", "cpu", "--few-shot", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ofakit: error: --few-shot: needs at least 4 subnets, got 1"]
