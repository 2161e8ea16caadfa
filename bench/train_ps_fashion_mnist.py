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
import dataclasses
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _report import machine as host_machine  # noqa: E402
from ofakit.ofa_core.errors import UserError  # noqa: E402
from ofakit.ofa_core.train import PhaseConfig, ProgressiveShrinking, Trainer, TrainConfig, builtin_config, \
    init_distributed, load_config, train_from_scratch  # noqa: E402
from ofakit.ofa_core.fileio import atomic_write_bytes  # noqa: E402
from ofakit.ofa_core.train.checkpoint import atomic_write_json, load_model_state, model_state  # noqa: E402
from ofakit.ofa_core.train.data import make_splits  # noqa: E402
from ofakit.ofa_core.train.evaluate import BatchCache, reference_archs, subnet_accuracy  # noqa: E402

PROBE_STEPS = 30
ENV = init_distributed()  # one process; the GPU when there is one


def machine() -> str:
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{host_machine()}{gpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"


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


def fit_to_budget(cfg: TrainConfig, budget_s: float, out: Path, contention: float) -> tuple[TrainConfig, dict]:
    """Scale every phase's epochs by one factor so the schedule fits ``budget_s`` seconds of training.

    A probe trains each phase for ``PROBE_STEPS`` steps (same batch, resolutions, subnets per step and teacher)
    into ``out/probe`` and reads its seconds per step from the log; ``contention`` inflates them for jobs that
    will share the device (e.g. from-scratch runs in parallel)."""
    steps = PROBE_STEPS
    probe_phases = tuple(dataclasses.replace(p, epochs=1, warmup_epochs=0) for p in cfg.phases)
    probe = dataclasses.replace(cfg, phases=probe_phases, eval=dataclasses.replace(cfg.eval, n_random=0),
                                data=dataclasses.replace(cfg.data, train_subset=steps * max(
                                    p.batch_size for p in cfg.phases)))
    probe.validate()
    shutil.rmtree(out / "probe", ignore_errors=True)
    t0 = time.time()
    probe_run = ProgressiveShrinking(probe, out / "probe", ENV, progress=False)
    probe_run.run()
    logs = [json.loads(line) for line in (out / "probe" / "log.jsonl").read_text().splitlines()]
    per_step = {r["phase"]: r["seconds"] / r["step"] for r in logs}
    n_train = len(make_splits(probe_run.splits.source, cfg.data.holdout, cfg.data.split_seed,  # no second load
                              cfg.data.train_subset).train)

    def seconds(m: float) -> float:
        return sum(max(1, round(m * p.epochs)) * (n_train // p.batch_size) * per_step[p.name] * contention
                   for p in cfg.phases)

    m = 0.05
    while seconds(m + 0.05) <= budget_s and m < 20:
        m += 0.05
    phases = tuple(dataclasses.replace(p, epochs=max(1, round(m * p.epochs)),
                                       warmup_epochs=min(p.warmup_epochs, max(1, round(m * p.epochs)) - 1))
                   for p in cfg.phases)
    scaled = dataclasses.replace(cfg, phases=phases)
    scaled.validate()
    info = {"budget_s": budget_s, "probe_steps": steps, "probe_seconds": round(time.time() - t0, 1),
            "seconds_per_step": {k: round(v, 4) for k, v in per_step.items()}, "contention": contention,
            "factor": round(m, 2), "predicted_s": round(seconds(m), 1), "epochs": [p.epochs for p in phases]}
    return scaled, info


def scratch_setup(cfg: TrainConfig, n: int) -> tuple[list[str], dict, PhaseConfig]:
    """The architectures trained from scratch (the smallest and ``n - 1`` random reference subnets) and their
    schedule: as many epochs as the whole progressive-shrinking schedule, at the first phase's batch and LR."""
    names = ["smallest"] + [f"random-{i}" for i in range(max(0, n - 1))]
    archs = {na.name: na.arch for na in reference_archs(cfg.width, cfg.resolutions, cfg.eval.n_random, cfg.seed)}
    first = cfg.phases[0]
    phase = PhaseConfig(name="scratch", epochs=sum(p.epochs for p in cfg.phases), lr=first.lr,
                        batch_size=first.batch_size, resolutions=first.resolutions,
                        warmup_epochs=first.warmup_epochs)
    return names, archs, phase


def scratch_one(cfg: TrainConfig, out: Path, name: str, n: int, splits=None) -> dict:
    """Train one reference architecture from scratch; writes and returns ``out/scratch/NAME/result.json``."""
    names, archs, phase = scratch_setup(cfg, n)
    path = out / "scratch" / name / "result.json"
    if path.exists():
        return json.loads(path.read_text())
    t0 = time.time()
    trainer = Trainer(cfg, out / "scratch", ENV, splits=splits)
    acc = train_from_scratch(trainer, archs[name], phase, out / "scratch" / name)
    res = {"name": name, "scratch_acc": acc, "scratch_epochs": phase.epochs, "seconds": round(time.time() - t0, 1)}
    atomic_write_json(path, res)
    return res


def spawn(cmd: list[str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float | None) -> int | None:
    """Wait for ``proc`` up to ``timeout`` seconds, then stop its whole process group; its return code, or None
    if it had to be stopped."""
    try:
        return proc.wait(timeout=None if timeout is None else max(0.0, timeout))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "ps-fmnist")
    ap.add_argument("--config", default=str(builtin_config("ps_fashion_mnist")))
    ap.add_argument("--budget-s", type=float, help="seconds of progressive-shrinking training: a probe times each "
                                                    "phase and all epochs are scaled by one factor to fit")
    ap.add_argument("--contention", type=float, default=1.0,
                    help="slow-down assumed while from-scratch runs share the device (with --budget-s)")
    ap.add_argument("--n-acc", type=int, default=1000)
    ap.add_argument("--acc-eval", type=int, default=1000, help="held-out images per accuracy-dataset subnet")
    ap.add_argument("--acc-calib", type=int, default=250, help="BN calibration images per accuracy-dataset subnet")
    ap.add_argument("--acc-procs", type=int, default=2, help="processes (torchrun) for the accuracy dataset")
    ap.add_argument("--acc-time-s", type=float, help="stop the accuracy dataset after this many seconds (the "
                                                      "records written so far are kept)")
    ap.add_argument("--scratch", type=int, default=3, help="architectures trained from scratch")
    ap.add_argument("--scratch-parallel", action="store_true",
                    help="train the from-scratch architectures in their own processes, alongside the supernet")
    ap.add_argument("--scratch-wait-s", type=float, help="with --scratch-parallel: stop from-scratch runs still "
                                                          "going this many seconds after the supernet is done")
    ap.add_argument("--scratch-one", metavar="NAME", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-append", action="store_true", help="do not append to BENCHMARKS.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.scratch_one:
        res = scratch_one(load_config(args.config), out, args.scratch_one, args.scratch)
        print(json.dumps(res), flush=True)
        return 0
    res_path = out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}
    results.setdefault("started", dt.datetime.now().isoformat(timespec="seconds"))
    results.setdefault("loadavg", []).append(round(os.getloadavg()[0], 1))
    results["machine"] = machine()
    secs = results.setdefault("seconds", {})

    def save() -> None:
        atomic_write_json(res_path, results)

    # 0. the schedule, scaled to --budget-s by a probe (once: a resumed run keeps it)
    cfg_path = Path(args.config)
    if args.budget_s is not None:
        scaled_path = out / "config-scaled.yaml"
        if not scaled_path.exists():
            scaled, info = fit_to_budget(load_config(args.config), args.budget_s, out, args.contention)
            results["budget"] = info
            save()
            atomic_write_bytes(scaled_path, yaml.safe_dump(scaled.to_dict(), sort_keys=False).encode())
            print(f"budget: {json.dumps(info)}", flush=True)
        cfg_path = scaled_path
    cfg = load_config(cfg_path)

    # 1. progressive shrinking (from-scratch runs alongside it with --scratch-parallel)
    names, _, _ = scratch_setup(cfg, args.scratch)
    procs = {}
    if args.scratch_parallel:
        for name in names:
            cmd = [sys.executable, __file__, "--out", str(out), "--config", str(cfg_path), "--scratch-one", name,
                   "--scratch", str(args.scratch), "--threads", str(args.threads)]
            procs[name] = spawn(cmd, out / "scratch" / f"{name}.log")
    t0 = time.time()
    ps = ProgressiveShrinking(cfg, out / "supernet", ENV, progress=False)
    evals = ps.run(resume=True)
    results["phases"] = evals
    secs["progressive_shrinking"] = secs.get("progressive_shrinking", 0) + round(time.time() - t0, 1)
    save()
    print("\n".join(phase_table(evals)), flush=True)

    # 2. the paper's claim: subnets from the supernet vs the same architectures trained from scratch
    final_eval = {s["name"]: s for s in evals[-1]["subnets"]}
    claim = results.setdefault("scratch", {})
    t0 = time.time()
    for name in names:
        if name in claim:
            continue
        if name in procs:
            code = finish(procs[name], None if args.scratch_wait_s is None else
                          args.scratch_wait_s - (time.time() - t0))
            path = out / "scratch" / name / "result.json"
            if code != 0 or not path.exists():
                print(f"{name}: from-scratch run failed (exit {code}); see {out / 'scratch' / name}.log", flush=True)
                continue
            res = json.loads(path.read_text())
        else:
            res = scratch_one(cfg, out, name, args.scratch, ps.splits)
        claim[name] = {"arch": final_eval[name], "ps_acc": final_eval[name]["acc"], **res}
        save()
        print(f"{name}: supernet {pct(final_eval[name]['acc'])}%  scratch {pct(res['scratch_acc'])}%", flush=True)
    secs["scratch_wait"] = secs.get("scratch_wait", 0) + round(time.time() - t0, 1)

    # 3. the accuracy dataset from the final supernet, sharded over --acc-procs processes under torchrun
    t0 = time.time()
    last = out / "supernet" / cfg.phases[-1].name / "final.pt"
    acc_path = out / "accuracy.jsonl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.acc_procs),
           "--module", "--", "ofakit", "accuracy-dataset", "--n", str(args.n_acc), "--checkpoint", str(last),
           "--out", str(acc_path), "--seed", "1", "--eval-images", str(args.acc_eval), "--calib-images",
           str(args.acc_calib), "--threads", str(args.threads), "--quiet"]
    print(" ".join(cmd), flush=True)
    code = finish(spawn(cmd, out / "accuracy-dataset.log"), args.acc_time_s)
    n_records = len(acc_path.read_text().splitlines()) if acc_path.exists() else 0
    print(f"accuracy dataset: {n_records} records (exit {code})", flush=True)
    results["accuracy_dataset"] = {"n_requested": args.n_acc, "n": n_records, "eval_images": args.acc_eval,
                                   "calib_images": args.acc_calib, "processes": args.acc_procs,
                                   "stopped_at_time_limit": code is None}
    secs["accuracy_dataset"] = secs.get("accuracy_dataset", 0) + round(time.time() - t0, 1)
    save()
    if code not in (0, None) or n_records < 10:
        print(f"accuracy dataset failed; see {out / 'accuracy-dataset.log'}", flush=True)
        return 1

    # 4. the accuracy predictor on it
    try:
        from ofakit.predictors.accuracy import AccuracyMLP, accuracy_metrics, load_accuracy_jsonl
    except ImportError as exc:
        results["predictor"] = {"skipped": f"ofakit.predictors.accuracy not importable ({exc})"}
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
        save()
        print(f"predictor: {json.dumps(results['predictor'])}", flush=True)
    # 5. the noise floor of the labels: the same subnets measured again on other held-out images
    if "noise" not in results:
        results["noise"] = measurement_noise(cfg, ps.splits, out, acc_path, args)
        save()
    results["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    results["loadavg"].append(round(os.getloadavg()[0], 1))
    save()
    text = report(results, cfg, args)
    print(text)
    (out / "report.md").write_text(text, encoding="utf-8")
    if not args.no_append:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as f:
            f.write(text)
    return 0


def measurement_noise(cfg, splits, out: Path, acc_path: Path, args, n: int = 30) -> dict:
    """Re-measure ``n`` dataset subnets on the next ``--acc-eval`` held-out images (disjoint from the ones the
    dataset used); the RMS difference / sqrt(2) is the noise of one measurement, a floor for any predictor's RMSE."""
    from ofakit.predictors.accuracy import load_accuracy_jsonl
    batch, acc = load_accuracy_jsonl(acc_path)
    full = make_splits(splits.source, cfg.data.holdout, cfg.data.split_seed, cfg.data.train_subset, None,
                       args.acc_calib)
    other = dataclasses.replace(full, holdout=full.holdout[args.acc_eval:2 * args.acc_eval])
    if len(other.holdout) < args.acc_eval:
        return {"skipped": f"{len(full.holdout)} held-out images: fewer than twice --acc-eval {args.acc_eval}"}
    model = ProgressiveShrinking(cfg, out / "supernet", ENV, splits=splits).new_supernet()
    last = out / "supernet" / cfg.phases[-1].name / "final.pt"
    load_model_state(model, model_state(last), str(last))
    archs = batch[:n].to_configs()
    cache = BatchCache()
    again = np.array([subnet_accuracy(model, a, other, cfg.eval.batch_size, cfg.data.center_crop, cache)
                      for a in archs])
    diff = again - acc[:n]
    return {"n": len(archs), "images": len(other.holdout), "rms_diff_points": float(100 * np.sqrt(np.mean(diff ** 2))),
            "noise_points": float(100 * np.sqrt(np.mean(diff ** 2) / 2))}


def budget_note(results: dict) -> str:
    b = results.get("budget")
    if not b:
        return ""
    return (f" with every phase's epochs scaled by {b['factor']} to fit {b['budget_s']:.0f} s (probe: "
            f"{', '.join(f'{k} {1000 * v:.0f}' for k, v in b['seconds_per_step'].items())} ms/step; predicted "
            f"{b['predicted_s']:.0f} s with {b['contention']}x for jobs sharing the device)")


def report(results: dict, cfg, args) -> str:
    d = cfg.data
    phases = ", ".join(f"{p.name} {p.epochs} ep (K={p.subnets_per_step}, lr {p.lr})" for p in cfg.phases)
    lines = ["", f"## Progressive shrinking on Fashion-MNIST (bench/train_ps_fashion_mnist.py, "
                 f"{results['finished'][:10]})", "",
             f"Machine: {results['machine']} (1-minute load average at the "
             f"(re)starts and the end: {results['loadavg']}). Started {results['started']}, finished "
             f"{results['finished']}; wall time (s): "
             f"{', '.join(f'{k} {v:.0f}' for k, v in results['seconds'].items())}.",
             f"Schedule {Path(args.config).name}{budget_note(results)}: width {cfg.width}, resolutions "
             f"{list(cfg.resolutions)}, batch {cfg.phases[0].batch_size}, "
             f"{d.train_subset or 'all remaining'} training images, "
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
    if nz and "skipped" in nz:
        lines += ["", f"Label noise: not measured ({nz['skipped']})."]
    elif nz:
        lines += ["", f"Label noise: {nz['n']} of these subnets measured again on {nz['images']} other held-out "
                      f"images differ by {nz['rms_diff_points']:.2f} points RMS, i.e. one measurement carries about "
                      f"{nz['noise_points']:.2f} points of noise -- a floor under any predictor's RMSE on these "
                      f"labels."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
