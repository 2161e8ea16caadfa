"""Training configs: shipped schedules parse; every mistake is one UserError naming the file and the field."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.train.config import builtin_config, load_config, parse_config, resolve_config

BASE = {
    "seed": 0,
    "data": {"source": "fashion-mnist", "holdout": 100},
    "phases": [
        {"name": "full", "epochs": 2, "lr": 0.1, "batch_size": 8, "resolutions": [32], "ks": [7], "e": [6],
         "d": [4]},
        {"name": "kernel", "epochs": 1, "lr": 0.01, "batch_size": 8, "resolutions": [32, 40], "ks": [3, 5, 7],
         "e": [6], "d": [4], "kd_ratio": 1.0},
    ],
}


def with_change(path: str, value) -> dict:
    """BASE with one field changed; ``path`` like "phases.1.lr" (a value of DELETE removes the field)."""
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    if value is DELETE:
        del node[int(last) if isinstance(node, list) else last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return data


DELETE = object()


@pytest.mark.parametrize("name", ["ps_fashion_mnist", "ps_imagenet"])
def test_shipped_schedules_parse_and_follow_the_paper_order(name):
    cfg = load_config(builtin_config(name))
    names = [p.name for p in cfg.phases]
    assert names == ["full", "kernel", "depth-1", "depth-2", "expand-1", "expand-2"]
    assert cfg.phases[0].is_full_network and cfg.phases[0].kd_ratio == 0
    assert [p.d for p in cfg.phases[2:4]] == [(3, 4), (2, 3, 4)]
    assert [p.e for p in cfg.phases[4:]] == [(4, 6), (3, 4, 6)]
    assert all(p.reorganize_channels for p in cfg.phases[4:]) and not cfg.phases[3].reorganize_channels
    assert all(p.kd_ratio > 0 for p in cfg.phases[1:])


def test_round_trip_and_defaults():
    cfg = parse_config(BASE)
    assert cfg.phases[1].ks == (3, 5, 7) and cfg.phases[1].subnets_per_step == 1
    assert cfg.resolutions == (32, 40)
    assert cfg.optim.label_smoothing == 0.1 and cfg.data.split_seed == 0
    assert parse_config(cfg.to_dict()) == cfg


@pytest.mark.parametrize("path,value,message", [
    ("phases.1.lr", 0, "phases[1].lr: must be > 0"),
    ("phases.1.lr", "fast", "phases[1].lr: expected a number"),
    ("phases.0.epochs", 1.5, "phases[0].epochs: expected an integer"),
    ("phases.1.ks", [3, 9], "phases[1].ks: 9 is not one of [3, 5, 7]"),
    ("phases.1.d", [], "phases[1].d: must list at least one choice"),
    ("phases.1.e", 6, "phases[1].e: expected a list"),
    ("phases.1.resolutions", [16], "phases[1].resolutions: 16 is outside [32, 1024]"),
    ("phases.1.name", "full", "phases[1].name: 'full' is used by an earlier phase"),
    ("phases.1.name", "a/b", "phases[1].name: must be letters"),
    ("phases.1.warmup_epochs", 1, "phases[1].warmup_epochs: must be in [0, epochs)"),
    ("phases.1.subnets_per_step", 0, "phases[1].subnets_per_step: must be >= 1"),
    ("phases.1.reorganize_channels", "yes", "phases[1].reorganize_channels: expected true or false"),
    ("phases.1.batch_sise", 8, "phases[1].batch_sise: unknown field"),
    ("phases.1.lr", DELETE, "phases[1].lr: missing"),
    ("phases.0.e", [4, 6], "phases[1].kd_ratio: distillation needs phases[0] to train the full network"),
    ("data.holdout", 0, "data.holdout: must be >= 1"),
    ("data.crop_scale", [0.5, 0.2], "data.crop_scale: must satisfy 0 < min <= max <= 1"),
    ("data.crop_scale", [0.5], "data.crop_scale: expected 2 values"),
    ("optim.momentum", 1.0, "optim.momentum: must be in [0, 1)"),
    ("optim.label_smoothing", -0.1, "optim.label_smoothing: must be in [0, 1)"),
    ("eval.n_random", -1, "eval.n_random: must be >= 0"),
    ("width", 0, "width: must be in (0, 4]"),
    ("phases", [], "phases: must list at least one phase"),
    ("phases", {"name": "x"}, "phases: expected a list"),
    ("colour", "red", "colour: unknown field"),
])
def test_bad_fields_are_named(path, value, message):
    with pytest.raises(UserError) as err:
        parse_config(with_change(path, value))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_file_errors_name_the_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(with_change("phases.1.lr", -1)))
    with pytest.raises(UserError, match=r"bad\.yaml: phases\[1\]\.lr: must be > 0"):
        load_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("phases: [\n  {name: full\n")
    with pytest.raises(UserError, match=r"broken\.yaml: not valid YAML at line"):
        load_config(broken)
    with pytest.raises(UserError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(UserError, match="no such built-in schedule"):
        resolve_config("no_such_schedule")
    assert resolve_config("ps_imagenet") == builtin_config("ps_imagenet")


def test_cli_reports_config_errors_in_one_line(tmp_path: Path, capsys):
    from ofakit.cli import main
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(with_change("phases.0.batch_size", 0)))
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"ofakit: error: {bad}: phases[0].batch_size: must be >= 1, got 0"
    assert not (tmp_path / "run").exists()
