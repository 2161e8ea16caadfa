"""Progressive shrinking (OFA, arXiv:1908.09791 sec. 3.2) with knowledge distillation, one process or ``torchrun``.

Phases come from a :class:`~ofakit.ofa_core.train.config.TrainConfig`: the full network first (it becomes the frozen
teacher), then elastic kernel, depth and expand ratio, each phase sampling subnets only from its own choices.
Per step every rank draws the same resolution and the same ``subnets_per_step`` subnets (all seeded from
``(seed, phase, step)``), runs them on its share of the batch and sums their losses -- cross entropy with label
smoothing plus ``kd_ratio`` x soft-target cross entropy against the teacher -- so one backward accumulates the
gradients of all of them. Under ``torchrun`` that single forward/backward is wrapped in DistributedDataParallel
with ``find_unused_parameters=True``: which weights a step uses changes with the sampled subnets, and one backward
per step (rather than one per subnet inside ``no_sync``) is what lets DDP reduce every used gradient exactly once.

Every step is reproducible from its index (data order, crops, subnets, dropout), so a run resumed from
``PHASE/last.pt`` (written atomically every ``save_every_steps`` and at each epoch end) continues exactly as the
uninterrupted run would have. A finished phase leaves ``PHASE/final.pt`` (the next phase starts from it) and
``PHASE/eval.json`` (accuracy of the largest, smallest and random subnets on the held-out split).
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from ..errors import UserError
from ..space import ArchConfig
from ..supernet import OFAMobileNetV3
from .checkpoint import atomic_write_bytes, atomic_write_json, load_checkpoint, load_model_state, model_state, \
    save_checkpoint
from .config import OptimConfig, PhaseConfig, TrainConfig
from .data import Splits, make_splits, open_source, prefetch, train_batch
from .dist import DistEnv
from .evaluate import BatchCache, arch_record, crop_depthwise_to_input, reference_archs, static_accuracy, \
    subnet_accuracy

LAST, FINAL, EVAL, CONFIG, LOG = "last.pt", "final.pt", "eval.json", "config.yaml", "log.jsonl"
SampleFn = Callable[[np.random.Generator, int], Sequence["ArchConfig | None"]]


def step_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (same on every rank for the same parts)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from ``peak`` to 0 at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1.0 + math.cos(math.pi * t))


def make_optimizer(model: nn.Module, lr: float, cfg: OptimConfig) -> torch.optim.SGD:
    """SGD with momentum; no weight decay on BatchNorm and bias parameters (vectors)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}],
                           lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def soft_target_loss(logits: torch.Tensor, soft_logits: torch.Tensor) -> torch.Tensor:
    """Cross entropy against the teacher's softmax (OFA's ``cross_entropy_loss_with_soft_target``)."""
    return torch.sum(-F.softmax(soft_logits, dim=1) * F.log_softmax(logits, dim=1), dim=1).mean()


class SubnetsLoss(nn.Module):
    """The loss of one step: each subnet in ``archs`` on the same batch, losses summed (``None`` = run ``net``
    as it is, e.g. a static network). Returns (summed loss, [mean loss, mean top-1] detached)."""

    def __init__(self, net: nn.Module, label_smoothing: float, kd_ratio: float = 0.0):
        super().__init__()
        self.net, self.label_smoothing, self.kd_ratio = net, label_smoothing, kd_ratio
        self.archs: Sequence[ArchConfig | None] = (None,)

    def forward(self, x: torch.Tensor, y: torch.Tensor,
                soft: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        total = x.new_zeros(())
        stats = x.new_zeros(2)
        for arch in self.archs:
            if arch is not None:
                self.net.set_active_subnet(arch)
            logits = self.net(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
            if soft is not None and self.kd_ratio > 0:
                loss = loss + self.kd_ratio * soft_target_loss(logits, soft)
            total = total + loss
            stats += torch.stack([loss.detach(), (logits.detach().argmax(1) == y).float().mean()])
        return total, stats / len(self.archs)


class Teacher:
    """The full network of the first phase, frozen. Runs as OFA runs its teacher (BatchNorm on batch statistics),
    without dropout, as one static copy per input resolution with depthwise kernels cropped to their inputs."""

    def __init__(self, supernet: OFAMobileNetV3):
        self.supernet = supernet.requires_grad_(False)
        self._nets: dict[int, nn.Module] = {}

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        r = int(x.shape[-1])
        net = self._nets.get(r)
        if net is None:
            s = self.supernet.spec
            self.supernet.set_active_subnet(ArchConfig((max(s.ks_choices),) * 20, (max(s.e_choices),) * 20,
                                                       (max(s.d_choices),) * 5, r, s.width_mult))
            net = crop_depthwise_to_input(self.supernet.get_active_subnet())
            for m in net.modules():
                if isinstance(m, nn.Dropout):
                    m.p = 0.0
            net = self._nets[r] = net.train().requires_grad_(False)
        return net(x)


@dataclass
class _Meter:
    loss: float = 0.0
    acc: float = 0.0
    n: int = 0

    def add(self, stats: torch.Tensor) -> None:
        loss, acc = stats.tolist()
        self.loss, self.acc, self.n = self.loss + loss, self.acc + acc, self.n + 1

    def means(self) -> tuple[float, float]:
        return (self.loss / self.n, self.acc / self.n) if self.n else (math.nan, math.nan)


class Trainer:
    """Runs phases of a :class:`TrainConfig` into ``out`` on this rank; shared by the supernet schedule
    (:class:`ProgressiveShrinking`) and from-scratch training of static subnets (:meth:`fit`)."""

    def __init__(self, config: TrainConfig, out: str | Path, env: DistEnv | None = None,
                 splits: Splits | None = None, progress: bool = False):
        self.config, self.out, self.env = config, Path(out), env or DistEnv()
        d = config.data
        self.splits = splits or make_splits(open_source(d.source, d.workers), d.holdout, d.split_seed,
                                            d.train_subset, d.eval_images, d.calib_images)
        self.progress = _Progress(progress and self.env.is_main)

    @property
    def n_classes(self) -> int:
        return self.splits.source.n_classes

    # --- bookkeeping ------------------------------------------------------------------------------------
    def claim_out(self, resume: bool) -> None:
        """Record the config in ``out`` or check it matches the recorded one (``resume``)."""
        path = self.out / CONFIG
        mine = self.config.to_dict()
        existed = path.exists()
        self.env.barrier()  # every rank looks before rank 0 writes, so all ranks decide alike
        if existed:
            if not resume:
                raise UserError(f"{self.out}: holds a training run already; pass --resume to continue it or "
                                f"choose another --out")
            theirs = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            if diff:
                raise UserError(f"{self.out}: was started with a different config ({diff[0]} differs); "
                                f"resume it with the same config or choose another --out")
        elif self.env.is_main:
            atomic_write_bytes(path, yaml.safe_dump(mine, sort_keys=False).encode("utf-8"))
        self.env.barrier()

    def log(self, record: dict[str, Any]) -> None:
        if self.env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.out / LOG, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()

    # --- one phase ----------------------------------------------------------------------------------------
    def _batches(self, phase: PhaseConfig, index: int, steps_per_epoch: int, start: int,
                 total: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """(step, x, y) of this rank from ``start``; the resolution of a step is the same on every rank."""
        env, seed, train = self.env, self.config.seed, self.splits.train
        local = phase.batch_size // env.world
        perm, perm_epoch = None, -1
        for step in range(start, total):
            epoch, i = divmod(step, steps_per_epoch)
            if epoch != perm_epoch:
                perm, perm_epoch = np.random.default_rng([seed, index, epoch, 3]).permutation(len(train)), epoch
            r = phase.resolutions[np.random.default_rng([seed, index, step, 0]).integers(len(phase.resolutions))]
            lo = i * phase.batch_size + env.rank * local
            idx = train[perm[lo:lo + local]]
            aug = np.random.default_rng([seed, index, step, 2, env.rank])
            x, y = train_batch(self.splits.source, idx, int(r), aug, self.config.data.crop_scale)
            yield step, x, y

    def fit(self, model: nn.Module, phase: PhaseConfig, index: int, ckdir: Path, sample: SampleFn,
            teacher: Teacher | None = None) -> None:
        """Train ``model`` for one phase, resuming from ``ckdir/last.pt`` if present; writes ``last.pt``."""
        env, cfg = self.env, self.config
        n_train = len(self.splits.train)
        where = f"phases[{index}]"
        steps_per_epoch = n_train // phase.batch_size
        if steps_per_epoch == 0:
            raise UserError(f"{where}.batch_size: {phase.batch_size} is larger than the training split "
                            f"({n_train} images)")
        if phase.batch_size % env.world:
            raise UserError(f"{where}.batch_size: {phase.batch_size} does not split evenly over {env.world} "
                            f"processes")
        total, warmup = steps_per_epoch * phase.epochs, steps_per_epoch * phase.warmup_epochs
        opt = make_optimizer(model, phase.lr, cfg.optim)
        start = 0
        last = ckdir / LAST
        if last.exists():
            state = load_checkpoint(last)
            if state.get("phase") != phase.name or state.get("total_steps") != total:
                raise UserError(f"{last}: belongs to another schedule (phase {state.get('phase')!r}, "
                                f"{state.get('total_steps')} steps); remove it or use another --out")
            load_model_state(model, state["model"], str(last))
            opt.load_state_dict(state["optimizer"])
            start = int(state["step"])
        loss_fn = SubnetsLoss(model, cfg.optim.label_smoothing, phase.kd_ratio)
        engine: nn.Module = loss_fn
        if env.distributed:
            engine = nn.parallel.DistributedDataParallel(
                loss_fn, device_ids=[env.device.index] if env.device.type == "cuda" else None,
                find_unused_parameters=True)
        model.train()
        meter, t0 = _Meter(), time.time()
        task = self.progress.add(f"{phase.name}", total, start)
        for step, x, y in prefetch(self._batches(phase, index, steps_per_epoch, start, total)):
            x, y = x.to(env.device, non_blocking=True), y.to(env.device, non_blocking=True)
            lr = lr_at(step, total, warmup, phase.lr)
            for g in opt.param_groups:
                g["lr"] = lr
            r = int(x.shape[-1])
            loss_fn.archs = list(sample(np.random.default_rng([cfg.seed, index, step, 1]), r))
            soft = teacher(x) if teacher is not None and phase.kd_ratio > 0 else None
            torch.manual_seed(step_seed(cfg.seed, index, step, 4, env.rank))  # dropout; after the teacher, whose
            loss, stats = engine(x, y, soft)  # lazily built copies draw init weights from the same generator
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not torch.isfinite(loss):
                raise UserError(f"{where}: training diverged at step {step} (loss {float(loss)}); lower {where}.lr")
            meter.add(stats)
            done = step + 1
            mean_loss, mean_acc = meter.means()
            self.progress.update(task, done, f"r={r} lr={lr:.4f} loss={mean_loss:.3f} acc={mean_acc:.3f}")
            epoch_end = done % steps_per_epoch == 0
            if epoch_end or done % cfg.save_every_steps == 0:
                if env.is_main:
                    save_checkpoint(last, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                           "step": done, "phase": phase.name, "total_steps": total})
            if epoch_end:
                self.log({"phase": phase.name, "epoch": done // steps_per_epoch, "step": done, "lr": lr,
                          "loss": mean_loss, "train_acc": mean_acc, "seconds": round(time.time() - t0, 1)})
                meter, t0 = _Meter(), time.time()
        self.progress.finish(task)

    def finish_phase(self, model: nn.Module, ckdir: Path, name: str) -> None:
        """Write ``final.pt`` (rank 0) and drop the resume checkpoint; all ranks wait for it."""
        if self.env.is_main:
            save_checkpoint(ckdir / FINAL, {"model": model.state_dict(), "phase": name})
            (ckdir / LAST).unlink(missing_ok=True)
        self.env.barrier()


class ProgressiveShrinking(Trainer):
    """The whole schedule: phases in order, each resumed or started from the previous phase's weights."""

    def new_supernet(self) -> OFAMobileNetV3:
        torch.manual_seed(self.config.seed)
        return OFAMobileNetV3(self.config.width, self.n_classes, self.config.dropout).to(self.env.device)

    def teacher(self) -> Teacher:
        first = self.config.phases[0]
        path = self.out / first.name / FINAL
        net = self.new_supernet()
        load_model_state(net, model_state(path), str(path))
        return Teacher(net)

    def run(self, resume: bool = False) -> list[dict[str, Any]]:
        """Train every phase not yet finished; returns each phase's evaluation. The trained supernet is left in
        ``self.model``."""
        self.claim_out(resume)
        model = self.model = self.new_supernet()
        results = []
        try:
            self._run_phases(model, results)
        finally:
            self.progress.close()
        return results

    def _run_phases(self, model: OFAMobileNetV3, results: list[dict[str, Any]]) -> None:
        for index, phase in enumerate(self.config.phases):
            ckdir = self.out / phase.name
            final = ckdir / FINAL
            if final.exists():
                load_model_state(model, model_state(final), str(final))
            else:
                if not (ckdir / LAST).exists() and phase.reorganize_channels:
                    # OFA's re_organize_middle_weights(expand_ratio_stage=len(expand choices) - 2)
                    model.reorganize_channels(expand_stage=max(0, len(phase.e) - 2))
                teacher = self.teacher() if phase.kd_ratio > 0 else None

                def sample(rng: np.random.Generator, r: int, phase: PhaseConfig = phase) -> list[ArchConfig]:
                    return [model.sample_active_subnet(rng, ks=phase.ks, e=phase.e, d=phase.d, resolutions=[r])
                            for _ in range(phase.subnets_per_step)]

                self.fit(model, phase, index, ckdir, sample, teacher)
                self.finish_phase(model, ckdir, phase.name)
            results.append(self.evaluate_phase(model, phase, ckdir))

    def evaluate_phase(self, model: OFAMobileNetV3, phase: PhaseConfig, ckdir: Path) -> dict[str, Any]:
        """Accuracy of the reference subnets after ``phase`` (cached in ``eval.json``), shared over the ranks."""
        path = ckdir / EVAL
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
        cfg = self.config
        archs = reference_archs(cfg.width, cfg.resolutions, cfg.eval.n_random, cfg.seed)
        cache = BatchCache()
        accs = self.env.shard_map(lambda na: subnet_accuracy(model, na.arch, self.splits, cfg.eval.batch_size,
                                                             cfg.data.center_crop, cache), archs)
        model.train()
        res = {"phase": phase.name, "holdout_images": len(self.splits.holdout),
               "subnets": [{"name": na.name, **arch_record(na.arch), "acc": acc} for na, acc in zip(archs, accs)]}
        if self.env.is_main:
            atomic_write_json(path, res)
            self.progress.print(f"{phase.name}: " + ", ".join(f"{s['name']} {100 * s['acc']:.2f}%"
                                                             for s in res["subnets"][:2])
                                + (f", random mean {100 * np.mean([s['acc'] for s in res['subnets'][2:]]):.2f}%"
                                   if len(res["subnets"]) > 2 else ""))
        return res


def train_from_scratch(trainer: Trainer, arch: ArchConfig, phase: PhaseConfig, ckdir: Path) -> float:
    """Train the static network of ``arch`` alone at its own resolution (weights initialised as in a fresh
    supernet, no distillation) for ``phase``; resumable; returns its held-out top-1 (BatchNorm re-estimated at
    ``arch.r``, as for subnets taken from a supernet)."""
    cfg = trainer.config
    phase = dataclasses.replace(phase, resolutions=(arch.r,))
    torch.manual_seed(cfg.seed)
    init = OFAMobileNetV3(cfg.width, trainer.n_classes, cfg.dropout)
    init.set_active_subnet(arch)
    # exact at the one resolution it trains and runs at (the dropped taps only ever see zero padding)
    net = crop_depthwise_to_input(init.get_active_subnet()).to(trainer.env.device)
    final = ckdir / FINAL
    if final.exists():
        load_model_state(net, model_state(final), str(final))
    else:
        trainer.fit(net, phase, 0, ckdir, lambda rng, r: [None])
        trainer.finish_phase(net, ckdir, phase.name)
    return static_accuracy(net, arch.r, trainer.splits, cfg.eval.batch_size, cfg.data.center_crop)


class _Progress:
    """Rich progress bars on the main rank; silent elsewhere."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                                 console=Console(stderr=True))

    def add(self, name: str, total: int, done: int) -> Any:
        if self._bar is None:
            return None
        if not self._bar.live.is_started:
            self._bar.start()
        return self._bar.add_task(name, total=total, completed=done, status="")

    def update(self, task: Any, done: int, status: str) -> None:
        if self._bar is not None:
            self._bar.update(task, completed=done, status=status)

    def finish(self, task: Any) -> None:
        if self._bar is not None:
            self._bar.stop_task(task)

    def print(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text)
        elif self.enabled:
            print(text)

    def close(self) -> None:
        if self._bar is not None and self._bar.live.is_started:
            self._bar.stop()
