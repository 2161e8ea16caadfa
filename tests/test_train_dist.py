"""The training entry point under torchrun: 2 CPU processes (gloo) train with DDP, sampling the same subnets, and
their replicas stay identical; the accuracy dataset is sharded over the ranks into one file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
import yaml

from ofakit.ofa_core.supernet import OFAMobileNetV3
from ofakit.ofa_core.train.accuracy_dataset import dataset_archs

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent("""
    import json
    import sys

    import torch
    from ofakit.ofa_core.train import ProgressiveShrinking, build_accuracy_dataset, init_distributed, load_config, shutdown

    env = init_distributed("cpu")
    cfg, out = load_config(sys.argv[1]), sys.argv[2]
    ps = ProgressiveShrinking(cfg, out, env)
    ps.run()
    torch.save({k: p.detach() for k, p in ps.model.named_parameters()}, f"{out}/rank{env.rank}.pt")
    added = build_accuracy_dataset(ps.model, ps.splits, f"{out}/acc.jsonl", 5, cfg.resolutions, env)
    with open(f"{out}/report{env.rank}.json", "w") as f:
        json.dump({"rank": env.rank, "world": env.world, "added": added}, f)
    shutdown(env)
""")


def test_two_processes_under_torchrun_keep_identical_replicas(tmp_path: Path):
    common = {"epochs": 1, "batch_size": 8, "resolutions": [32, 40]}
    cfg = {"seed": 0, "save_every_steps": 1,
           "data": {"source": "fashion-mnist", "holdout": 64, "train_subset": 16, "eval_images": 16,
                    "calib_images": 16, "crop_scale": [0.35, 1.0], "center_crop": 1.0},
           "eval": {"n_random": 0, "batch_size": 16},
           "phases": [{**common, "name": "full", "lr": 0.05, "ks": [7], "e": [6], "d": [4]},
                      {**common, "name": "kernel", "lr": 0.02, "e": [6], "d": [4], "kd_ratio": 1.0},
                      {**common, "name": "elastic", "lr": 0.02, "subnets_per_step": 2, "kd_ratio": 1.0}]}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "worker.py").write_text(WORKER)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(tmp_path / "worker.py"), str(tmp_path / "cfg.yaml"), str(out)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads((out / f"report{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["world"]) for r in reports] == [(0, 2), (1, 2)]

    a = torch.load(out / "rank0.pt", weights_only=True)
    b = torch.load(out / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "replicas diverged"
    torch.manual_seed(0)
    fresh = dict(OFAMobileNetV3(1.0, 10, 0.1).named_parameters())
    changed = [k for k in a if not torch.equal(a[k], fresh[k])]
    # trained: stem, blocks, kernel transforms (used only by ks < 7, i.e. after the first phase) and the head
    assert any(k.startswith("stem") for k in changed) and any("kernel_transforms" in k for k in changed)
    assert any(k.startswith("classifier") for k in changed)
    assert json.loads((out / "elastic" / "eval.json").read_text())["subnets"][1]["name"] == "smallest"

    # the accuracy dataset: rank i took subnets i, i+2, ... into one file
    assert [r["added"] for r in reports] == [3, 2]
    recs = [json.loads(line) for line in (out / "acc.jsonl").read_text().splitlines()]
    got = {(tuple(r["ks"]), tuple(r["e"]), tuple(r["d"]), r["r"]) for r in recs}
    assert len(recs) == 5 and got == {(a.ks, a.e, a.d, a.r) for a in dataset_archs(5, 1.0, (32, 40))}
