"""Fuller progressive-shrinking run on Fashion-MNIST (CPU-sized), the paper's key claim, the accuracy dataset and
the accuracy predictor trained on it. Every step resumes from what an earlier, interrupted run left in --out.

  1. progressive shrinking with ofa_core/configs/ps_fashion_mnist.yaml: after each phase, held-out accuracy of
     the largest, the smallest and 10 random subnets (BatchNorm re-estimated, no fine-tuning);
  2. the same architectures (smallest + random ones) trained from scratch, alone, for as many epochs as the
     whole schedule, vs. taken from the supernet;
  3. the accuracy dataset: --n-acc random subnets of the final supernet -> accuracy.jsonl;
  4. predictors.accuracy.AccuracyMLP fitted on 80% of it, RMSE and Kendall tau on the other 20% (goal P6:
     RMSE <= 0.5 points, tau >= 0.8).
Results go to OUT/results.json after every step; a section is appended to BENCHMARKS.md at the end.

    .venv/bin/python bench/train_ps_fashion_mnist.py --out runs/ps-fmnist [--n-acc 1000] [--scratch 3]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ofa_core.errors import UserError  # noqa: E402
from ofa_core.train import PhaseConfig, ProgressiveShrinking, Trainer, builtin_config, load_config, \
    train_from_scratch  # noqa: E402
from ofa_core.train.checkpoint import atomic_write_json, load_model_state, model_state  # noqa: E402
from ofa_core.train.data import make_splits  # noqa: E402
from ofa_core.train.evaluate import reference_archs, subnet_accuracy  # noqa: E402


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def phase_table(evals: list[dict]) -> list[str]:
    rows = ["| phase | largest | smallest | random mean | random min | random max |", "|---|---|---|---|---|---|"]
    for ev in evals:
        acc = {s["name"]: s["acc"] for s in ev["subnets"]}
        rnd = [s["acc"] for s in ev["subnets"] if s["name"].startswith("random")]
        rows.append(f"| {ev['phase']} | {pct(acc['largest'])} | {pct(acc['smallest'])} | {pct(np.mean(rnd))} | "
                    f"{pct(min(rnd))} | {pct(max(rnd))} |")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "ps-fmnist")
    ap.add_argument("--config", default=str(builtin_config("ps_fashion_mnist")))
    ap.add_argument("--n-acc", type=int, default=1000)
    ap.add_argument("--acc-eval", type=int, default=1000, help="held-out images per accuracy-dataset subnet")
    ap.add_argument("--acc-calib", type=int, default=250, help="BN calibration images per accuracy-dataset subnet")
    ap.add_argument("--acc-procs", type=int, default=2, help="processes (torchrun) for the accuracy dataset")
    ap.add_argument("--scratch", type=int, default=3, help="architectures trained from scratch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-append", action="store_true", help="do not append to BENCHMARKS.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}
    results.setdefault("started", dt.datetime.now().isoformat(timespec="seconds"))
    results.setdefault("loadavg", []).append(round(os.getloadavg()[0], 1))
    results["machine"] = machine()

    def save() -> None:
        atomic_write_json(res_path, results)

    cfg = load_config(args.config)
    t0 = time.time()
    ps = ProgressiveShrinking(cfg, out / "supernet", progress=False)
    evals = ps.run(resume=True)
    results["phases"] = evals
    secs = results.setdefault("seconds", {})
    secs["progressive_shrinking"] = secs.get("progressive_shrinking", 0) + round(time.time() - t0, 1)
    save()
    print("\n".join(phase_table(evals)), flush=True)

    # 2. the paper's claim: subnets from the supernet vs the same architectures trained from scratch
    final_eval = {s["name"]: s for s in evals[-1]["subnets"]}
    names = ["smallest"] + [f"random-{i}" for i in range(max(0, args.scratch - 1))]
    archs = {na.name: na.arch for na in reference_archs(cfg.width, cfg.resolutions, cfg.eval.n_random, cfg.seed)}
    epochs = sum(p.epochs for p in cfg.phases)
    first = cfg.phases[0]
    scratch_phase = PhaseConfig(name="scratch", epochs=epochs, lr=first.lr, batch_size=first.batch_size,
                                resolutions=first.resolutions)
    trainer = Trainer(cfg, out / "scratch", splits=ps.splits)
    t0 = time.time()
    claim = results.setdefault("scratch", {})
    for name in names:
        if name in claim:
            continue
        acc = train_from_scratch(trainer, archs[name], scratch_phase, out / "scratch" / name)
        claim[name] = {"arch": final_eval[name], "ps_acc": final_eval[name]["acc"], "scratch_acc": acc,
                       "scratch_epochs": epochs}
        save()
        print(f"{name}: supernet {pct(final_eval[name]['acc'])}%  scratch {pct(acc)}%", flush=True)
    results["seconds"]["scratch"] = results["seconds"].get("scratch", 0) + round(time.time() - t0, 1)

    # 3. the accuracy dataset from the final supernet, sharded over --acc-procs processes under torchrun
    t0 = time.time()
    last = out / "supernet" / cfg.phases[-1].name / "final.pt"
    acc_path = out / "accuracy.jsonl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.acc_procs),
           "--no-python", "--", str(Path(sys.executable).parent / "ofakit"), "accuracy-dataset", "--n", str(args.n_acc),
           "--checkpoint", str(last), "--out", str(acc_path), "--seed", "1", "--eval-images", str(args.acc_eval),
           "--calib-images", str(args.acc_calib), "--threads", str(args.threads), "--quiet"]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    results["accuracy_dataset"] = {"n": args.n_acc, "eval_images": args.acc_eval, "calib_images": args.acc_calib,
                                   "processes": args.acc_procs}
    results["seconds"]["accuracy_dataset"] = results["seconds"].get("accuracy_dataset", 0) + round(
        time.time() - t0, 1)
    save()

    # 4. the accuracy predictor on it
    try:
        from predictors.accuracy import AccuracyMLP, accuracy_metrics, load_accuracy_jsonl
    except ImportError as exc:
        results["predictor"] = {"skipped": f"predictors.accuracy not importable ({exc})"}
    else:
        batch, acc = load_accuracy_jsonl(acc_path)
        order = np.random.default_rng(0).permutation(len(acc))
        n_test = len(acc) // 5
        test, train = order[:n_test], order[n_test:]
        t0 = time.time()
        mlp = AccuracyMLP(encoding="general").fit(batch[train], acc[train])
        m = accuracy_metrics(acc[test], mlp.predict(batch[test]))
        try:
            mlp.save(out / "accuracy-predictor")
        except UserError as exc:  # e.g. a tiny smoke run whose validation metrics are undefined
            print(f"predictor not saved: {exc}", flush=True)
        results["predictor"] = {"n_train": int(len(train)), "n_test": int(n_test), "rmse_points": m.rmse_points,
                                "kendall_tau": m.kendall_tau, "spearman": m.spearman,
                                "acc_mean": float(acc.mean()), "acc_std_points": float(100 * acc.std()),
                                "acc_range": [float(acc.min()), float(acc.max())], "fit_seconds":
                                    round(time.time() - t0, 1)}
    # 5. the noise floor of the labels: the same subnets measured again on other held-out images
    if "noise" not in results:
        results["noise"] = measurement_noise(cfg, ps.splits, out, acc_path, args)
        save()
    results["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    results["loadavg"].append(round(os.getloadavg()[0], 1))
    save()
    text = report(results, cfg, args)
    print(text)
    if not args.no_append:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as f:
            f.write(text)
    return 0


def measurement_noise(cfg, splits, out: Path, acc_path: Path, args, n: int = 30) -> dict:
    """Re-measure ``n`` dataset subnets on the next ``--acc-eval`` held-out images (disjoint from the ones the
    dataset used); the RMS difference / sqrt(2) is the noise of one measurement, a floor for any predictor's RMSE."""
    import dataclasses

    from predictors.accuracy import load_accuracy_jsonl
    batch, acc = load_accuracy_jsonl(acc_path)
    full = make_splits(splits.source, cfg.data.holdout, cfg.data.split_seed, cfg.data.train_subset, None,
                       args.acc_calib)
    other = dataclasses.replace(full, holdout=full.holdout[args.acc_eval:2 * args.acc_eval])
    model = ProgressiveShrinking(cfg, out / "supernet", splits=splits).new_supernet()
    last = out / "supernet" / cfg.phases[-1].name / "final.pt"
    load_model_state(model, model_state(last), str(last))
    archs = batch[:n].to_configs()
    again = np.array([subnet_accuracy(model, a, other, cfg.eval.batch_size, cfg.data.center_crop) for a in archs])
    diff = again - acc[:n]
    return {"n": len(archs), "images": len(other.holdout), "rms_diff_points": float(100 * np.sqrt(np.mean(diff ** 2))),
            "noise_points": float(100 * np.sqrt(np.mean(diff ** 2) / 2))}


def report(results: dict, cfg, args) -> str:
    d = cfg.data
    phases = ", ".join(f"{p.name} {p.epochs} ep (K={p.subnets_per_step}, lr {p.lr})" for p in cfg.phases)
    lines = ["", f"## Progressive shrinking on Fashion-MNIST (bench/train_ps_fashion_mnist.py, "
                 f"{results['finished'][:10]})", "",
             f"Machine: {results['machine']}; shared with other developers' jobs (1-minute load average at the "
             f"(re)starts and the end: {results['loadavg']}). Started {results['started']}, finished "
             f"{results['finished']}; wall time (s): "
             f"{', '.join(f'{k} {v:.0f}' for k, v in results['seconds'].items())}.",
             f"Schedule {Path(args.config).name}: width {cfg.width}, resolutions "
             f"{list(cfg.resolutions)}, batch {cfg.phases[0].batch_size}, {d.train_subset} training images, "
             f"{d.holdout} training images held out (accuracy on {d.eval_images} of them; BN re-estimated on "
             f"{d.calib_images} training images; the t10k test split unused); {phases}; KD ratio 1.0 from the "
             f"full network.", "",
             "Top-1 (%) on the held-out split after each phase (10 random subnets: the same ones each phase):", ""]
    lines += phase_table(results["phases"])
    lines += ["", "Subnets taken from the final supernet (BN re-estimated, no fine-tuning) vs the same architecture "
                  "trained alone from scratch (same init, no distillation, at its own resolution) for as many "
                  "epochs as the whole schedule:", "",
              "| arch | r | supernet | from scratch | difference |", "|---|---|---|---|---|"]
    for name, c in results.get("scratch", {}).items():
        lines.append(f"| {name} | {c['arch']['r']} | {pct(c['ps_acc'])} | {pct(c['scratch_acc'])} | "
                     f"{100 * (c['ps_acc'] - c['scratch_acc']):+.2f} |")
    p = results.get("predictor", {})
    lines += [""]
    if "rmse_points" in p:
        a = results.get("accuracy_dataset", {})
        lines.append(f"Accuracy dataset: {p['n_train'] + p['n_test']} random subnets of the final supernet "
                     f"(`ofakit accuracy-dataset` under torchrun, {a.get('processes')} processes; BN re-estimated on "
                     f"{a.get('calib_images')} training images, top-1 on {a.get('eval_images')} held-out images; mean {pct(p['acc_mean'])}%, std {p['acc_std_points']:.2f} points, range "
                     f"{pct(p['acc_range'][0])}-{pct(p['acc_range'][1])}%). AccuracyMLP (general encoding) on "
                     f"{p['n_train']}, tested on {p['n_test']} held-out records: RMSE {p['rmse_points']:.3f} "
                     f"points, Kendall tau {p['kendall_tau']:.3f}, Spearman {p['spearman']:.3f} "
                     f"(goal P6: RMSE <= 0.5, tau >= 0.8).")
    else:
        lines.append(f"Accuracy predictor: {p.get('skipped', 'not run')}.")
    nz = results.get("noise")
    if nz:
        lines += ["", f"Label noise: {nz['n']} of these subnets measured again on {nz['images']} other held-out "
                      f"images differ by {nz['rms_diff_points']:.2f} points RMS, i.e. one measurement carries about "
                      f"{nz['noise_points']:.2f} points of noise -- a floor under any predictor's RMSE on these "
                      f"labels."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
