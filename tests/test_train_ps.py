"""A tiny progressive-shrinking run on Fashion-MNIST through every phase, killed and resumed, and the accuracy
dataset built from it (resumable, torn lines repaired). CPU-sized: width 1.0, 2 steps per phase, 32-48 px."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from ofakit.ofa_core.train.accuracy_dataset import dataset_archs
from ofakit.ofa_core.train.checkpoint import model_state
from ofakit.cli import main

ROOT = Path(__file__).resolve().parents[1]
PHASES = ["full", "kernel", "depth-1", "depth-2", "expand-1", "expand-2"]


def tiny_config(path: Path) -> Path:
    common = {"epochs": 1, "batch_size": 8, "resolutions": [32, 48]}
    phases = [
        {"name": "full", "lr": 0.05, "ks": [7], "e": [6], "d": [4]},
        {"name": "kernel", "lr": 0.02, "ks": [3, 5, 7], "e": [6], "d": [4], "kd_ratio": 1.0},
        {"name": "depth-1", "lr": 0.01, "e": [6], "d": [3, 4], "subnets_per_step": 2, "kd_ratio": 1.0},
        {"name": "depth-2", "lr": 0.01, "e": [6], "subnets_per_step": 2, "kd_ratio": 1.0},
        {"name": "expand-1", "lr": 0.01, "e": [4, 6], "subnets_per_step": 2, "kd_ratio": 1.0,
         "reorganize_channels": True},
        {"name": "expand-2", "lr": 0.01, "subnets_per_step": 2, "kd_ratio": 1.0, "reorganize_channels": True},
    ]
    cfg = {"seed": 0, "width": 1.0, "save_every_steps": 1,
           "data": {"source": "fashion-mnist", "holdout": 64, "train_subset": 16, "eval_images": 16,
                    "calib_images": 16, "crop_scale": [0.35, 1.0], "center_crop": 1.0},
           "eval": {"n_random": 0, "batch_size": 16},
           "phases": [{**common, **p} for p in phases]}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread):
    """An uninterrupted run through all phases via the CLI."""
    base = tmp_path_factory.mktemp("ps")
    cfg = tiny_config(base / "tiny.yaml")
    out = base / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--quiet"]) == 0
    return cfg, out


def test_all_phases_train_evaluate_and_log(run, capsys):
    cfg, out = run
    for name in PHASES:
        assert (out / name / "final.pt").is_file() and not (out / name / "last.pt").exists()
        ev = json.loads((out / name / "eval.json").read_text())
        assert [s["name"] for s in ev["subnets"]] == ["largest", "smallest"]
        assert all(0.0 <= s["acc"] <= 1.0 for s in ev["subnets"]) and ev["holdout_images"] == 16
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in log] == PHASES and all(r["step"] == 2 for r in log)
    # the distilled phases train on the KD loss (CE + soft-target CE), so their loss is clearly above plain CE
    assert all(r["loss"] > 0 for r in log)
    sd = model_state(out / "expand-2" / "final.pt")
    first = model_state(out / "full" / "final.pt")
    assert any(not torch.equal(sd[k], first[k]) for k in sd)  # later phases changed the weights
    # a second start without --resume is refused, with one line
    assert main(["train", "--config", str(cfg), "--out", str(out), "--quiet"]) == 2
    assert "pass --resume" in capsys.readouterr().err


def test_killed_run_resumes_to_the_same_weights(run, tmp_path: Path):
    cfg, reference = run
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", "from ofakit.cli import main; main()", "train", "--config",
                             str(cfg), "--out", str(out), "--quiet", "--threads", "1"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = out / "depth-1" / "last.pt"
    deadline = time.time() + 240
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.exists(), proc.stderr.read().decode()[-2000:]
    assert not (out / "expand-2" / "final.pt").exists()
    done_before = (out / "full" / "final.pt").stat().st_mtime_ns
    assert main(["train", "--config", str(cfg), "--out", str(out), "--resume", "--quiet"]) == 0
    assert (out / "full" / "final.pt").stat().st_mtime_ns == done_before  # finished phases are not redone
    ref, got = model_state(reference / "expand-2" / "final.pt"), model_state(out / "expand-2" / "final.pt")
    assert ref.keys() == got.keys()
    diff = max(float((ref[k].float() - got[k].float()).abs().max()) for k in ref)
    assert diff == 0.0, f"resumed run differs from the uninterrupted one by {diff}"
    log = [json.loads(line)["phase"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert log == PHASES  # every phase's epoch was logged once: nothing was trained twice


def test_resume_refuses_a_changed_config(run, tmp_path: Path, capsys):
    cfg, out = run
    changed = tmp_path / "changed.yaml"
    data = yaml.safe_load(cfg.read_text())
    data["seed"] = 1
    changed.write_text(yaml.safe_dump(data))
    assert main(["train", "--config", str(changed), "--out", str(out), "--resume", "--quiet"]) == 2
    assert "different config (seed differs)" in capsys.readouterr().err


def test_accuracy_dataset_resumes_and_repairs_a_torn_line(run, tmp_path: Path, capsys):
    cfg, out = run
    ckpt = out / "expand-2" / "final.pt"
    acc = tmp_path / "acc.jsonl"
    assert main(["accuracy-dataset", "--n", "3", "--checkpoint", str(ckpt), "--out", str(acc), "--quiet"]) == 0
    first = acc.read_text().splitlines()
    assert len(first) == 3
    with open(acc, "a") as f:
        f.write('{"ks": [3, 5')  # a record torn by a crash
    assert main(["accuracy-dataset", "--n", "5", "--checkpoint", str(ckpt), "--out", str(acc), "--quiet"]) == 0
    assert "added 2 records" in capsys.readouterr().out
    lines = acc.read_text().splitlines()
    assert lines[:3] == first and len(lines) == 5
    records = [json.loads(line) for line in lines]
    assert all(set(r) == {"ks", "e", "d", "r", "width", "acc"} and 0 <= r["acc"] <= 1 for r in records)
    want = {(tuple(a.ks), tuple(a.e), tuple(a.d), a.r) for a in dataset_archs(5, 1.0, (32, 48))}
    assert {(tuple(r["ks"]), tuple(r["e"]), tuple(r["d"]), r["r"]) for r in records} == want
    from ofakit.predictors.accuracy import load_accuracy_jsonl
    batch, values = load_accuracy_jsonl(acc)
    assert len(batch) == 5 and values.tolist() == [r["acc"] for r in records]
    # without the run's config next to the checkpoint the held-out split is unknown: refused
    lone = tmp_path / "lone" / "x" / "final.pt"
    lone.parent.mkdir(parents=True)
    lone.write_bytes(ckpt.read_bytes())
    assert main(["accuracy-dataset", "--n", "1", "--checkpoint", str(lone), "--out", str(acc)]) == 2
    assert "pass --config" in capsys.readouterr().err


def test_schedule_loss_and_optimizer_pieces():
    from ofakit.ofa_core.train.config import OptimConfig
    from ofakit.ofa_core.train.trainer import lr_at, make_optimizer, soft_target_loss
    lrs = [lr_at(s, 100, 10, 0.5) for s in range(100)]
    assert lrs[0] == 0.05 and lrs[9] == 0.5 and lrs[10] == 0.5  # linear warm-up, then cosine from the peak
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 1e-3
    logits = torch.randn(4, 10)
    big = torch.full((4, 10), -1e4)
    big[torch.arange(4), torch.tensor([1, 2, 3, 4])] = 1e4  # a one-hot teacher: KD = plain cross entropy
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor([1, 2, 3, 4]))
    assert torch.allclose(soft_target_loss(logits, big), ce)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = make_optimizer(net, 0.1, OptimConfig(weight_decay=1e-4))
    decay, no_decay = opt.param_groups
    assert [p.dim() for p in decay["params"]] == [4] and decay["weight_decay"] == 1e-4
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0  # conv bias, BN weight and bias


def test_train_on_an_image_folder(tmp_path: Path, one_thread):
    """`--data PATH` trains on an ImageNet-style folder (class sub-folders of images)."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for c, cls in enumerate(("stripes", "dots")):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(12):
            arr = rng.integers(0, 60, (40, 36, 3), dtype=np.uint8)
            arr[::4 if c == 0 else 1, ::1 if c == 0 else 4] += 150
            Image.fromarray(arr).save(tmp_path / "data" / cls / f"{i}.jpg")
    cfg = yaml.safe_load(tiny_config(tmp_path / "t.yaml").read_text())
    cfg["phases"] = cfg["phases"][:1]
    cfg["data"].update(holdout=8, train_subset=None, eval_images=None, calib_images=8, center_crop=0.875)
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "t.yaml"), "--data", str(tmp_path / "data"), "--out", str(out),
                 "--quiet"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["source"] == str(tmp_path / "data")
    ev = json.loads((out / "full" / "eval.json").read_text())
    assert ev["holdout_images"] == 8 and len(ev["subnets"]) == 2
    assert (out / "full" / "final.pt").is_file()
