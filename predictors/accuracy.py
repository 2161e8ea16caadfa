"""Accuracy predictors: an MLP over an arch encoding (ours, trainable) and OFA's pretrained one, one interface.

``load_accuracy_predictor("ofa:PATH")`` loads OFA's state dict (``Linear(128,400) ReLU ... Linear(400,1)`` over
:func:`~ofa_core.space.encode_ofa`, output top-1 as a fraction); ``load_accuracy_predictor("mlp:PATH")`` loads a
predictor saved by :meth:`AccuracyMLP.save`. Both are :class:`AccuracyMLP` objects whose ``predict(archs)``
returns top-1 fractions for a whole population at once: numpy encoding, then one float32 matmul per layer over
large chunks. :class:`AccuracyMLP` follows scikit-learn's estimator contract (``fit`` returns self, fitted
attributes end in ``_``).
"""
from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy import stats
from sklearn.base import BaseEstimator, RegressorMixin

from ofa_core.errors import ArchError, UserError
from ofa_core.records import read_accuracy_records
from ofa_core.space import ArchBatch, as_batch, encode_general, encode_ofa

from .base import Archs
from .persist import PredictorFileError, load_bundle, save_bundle

ENCODINGS: dict[str, Callable[[ArchBatch], np.ndarray]] = {"ofa": encode_ofa, "general": encode_general}
ENCODING_DIMS = {"ofa": 128, "general": 137}
KIND, VERSION, WEIGHTS = "accuracy-mlp", 1, "weights.pt"
CHUNK = 32768


def _torch():
    import torch
    return torch


def build_mlp(in_dim: int, hidden: Sequence[int]):
    """``Linear ReLU ... Linear(h, 1)`` as a ``torch.nn.Sequential`` (keys 0, 2, 4, ... as in OFA's file)."""
    nn = _torch().nn
    layers: list[Any] = []
    prev = in_dim
    for h in hidden:
        layers += [nn.Linear(prev, h), nn.ReLU()]
        prev = h
    layers.append(nn.Linear(prev, 1))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class AccuracyMetrics:
    """Held-out quality of an accuracy predictor: RMSE in percentage points, Kendall tau, Spearman rho."""

    rmse_points: float
    kendall_tau: float
    spearman: float
    n: int

    def __str__(self) -> str:
        return (f"n={self.n}  RMSE={self.rmse_points:.3f} points  Kendall tau={self.kendall_tau:.4f}  "
                f"Spearman={self.spearman:.4f}")


def accuracy_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> AccuracyMetrics:
    """Compare predicted and true top-1 fractions."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    rmse = float(np.sqrt(np.mean((y_true - y_pred) ** 2)) * 100.0)
    return AccuracyMetrics(rmse, float(stats.kendalltau(y_true, y_pred).statistic),
                           float(stats.spearmanr(y_true, y_pred).statistic), int(y_true.size))


class AccuracyMLP(RegressorMixin, BaseEstimator):
    """MLP accuracy predictor over an arch encoding; predicts top-1 as a fraction.

    ``fit`` holds out ``validation_fraction`` of the data, trains with Adam on the MSE of standardised targets
    and stops when the held-out loss has not improved for ``patience`` epochs, keeping the best weights.
    The default 128-128 net fits 2,000 samples as well as OFA's 400-400-400 (held-out RMSE and Kendall tau
    within noise, BENCHMARKS.md) at about a tenth of the multiply-adds per prediction.
    """

    def __init__(self, hidden: Sequence[int] = (128, 128), encoding: str = "general", lr: float = 1e-3,
                 weight_decay: float = 1e-4, epochs: int = 500, patience: int = 30, batch_size: int = 128,
                 validation_fraction: float = 0.1, random_state: int = 0):
        self.hidden = hidden
        self.encoding = encoding
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.patience = patience
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    # --- fitting ---------------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.encoding not in ENCODINGS:
            raise UserError(f"encoding: expected one of {sorted(ENCODINGS)}, got {self.encoding!r}")
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            raise UserError(f"hidden: expected positive layer sizes, got {self.hidden!r}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise UserError(f"validation_fraction: must be in (0, 1), got {self.validation_fraction}")

    def fit(self, archs: Archs, acc: np.ndarray) -> "AccuracyMLP":
        """Train on subnets and their top-1 fractions; returns self."""
        torch = _torch()
        self._check_params()
        batch = as_batch(archs)
        x = ENCODINGS[self.encoding](batch)
        y = np.asarray(acc, dtype=np.float64).ravel()
        if y.shape[0] != x.shape[0]:
            raise UserError(f"acc: {y.shape[0]} values for {x.shape[0]} subnets")
        if not np.all(np.isfinite(y)) or y.min() < 0 or y.max() > 1:
            raise UserError("acc: expected top-1 accuracy as a fraction in [0, 1]")
        rng = np.random.default_rng(self.random_state)
        order = rng.permutation(len(y))
        n_val = max(1, int(round(len(y) * self.validation_fraction)))
        if len(y) - n_val < 2:
            raise UserError(f"acc: need at least {n_val + 2} samples to fit, got {len(y)}")
        val, tr = order[:n_val], order[n_val:]
        self.y_mean_, self.y_std_ = float(y[tr].mean()), float(y[tr].std() or 1.0)
        yn = ((y - self.y_mean_) / self.y_std_).astype(np.float32)
        xt, yt = torch.from_numpy(x), torch.from_numpy(yn)
        with torch.random.fork_rng():
            torch.manual_seed(self.random_state)
            net = build_mlp(x.shape[1], [int(h) for h in self.hidden])
            opt = _Adam(list(net.parameters()), self.lr, self.weight_decay)
            best, best_state, waited, history = math.inf, None, 0, []
            for epoch in range(self.epochs):
                net.train()
                perm = torch.from_numpy(tr[rng.permutation(len(tr))])
                for i in range(0, len(perm), self.batch_size):
                    idx = perm[i:i + self.batch_size]
                    net.zero_grad(set_to_none=True)
                    loss = torch.nn.functional.mse_loss(net(xt[idx]).squeeze(1), yt[idx])
                    loss.backward()
                    opt.step()
                net.eval()
                with torch.inference_mode():
                    v = float(torch.nn.functional.mse_loss(net(xt[val]).squeeze(1), yt[val]))
                history.append(v)
                if v < best - 1e-9:
                    best, waited = v, 0
                    best_state = {k: t.detach().clone() for k, t in net.state_dict().items()}
                else:
                    waited += 1
                    if waited >= self.patience:
                        break
        net.load_state_dict(best_state)
        self._set_weights(net.state_dict())
        self.n_epochs_ = len(history)
        self.val_loss_history_ = history
        self.val_index_ = val
        self.validation_ = accuracy_metrics(y[val], self.predict(batch[val]))
        return self

    # --- inference -------------------------------------------------------------------------
    def _set_weights(self, state: dict[str, Any]) -> None:
        """Keep the layers as float32 numpy arrays (the fast inference path) and the state dict for saving."""
        keys = sorted({k.split(".")[0] for k in state}, key=int)
        self.layers_ = [(state[f"{k}.weight"].detach().cpu().numpy().astype(np.float32).T.copy(),
                         state[f"{k}.bias"].detach().cpu().numpy().astype(np.float32).copy()) for k in keys]

    def predict(self, archs: Archs) -> np.ndarray:
        """Predicted top-1 (fraction) for every subnet, shape (N,)."""
        if not hasattr(self, "layers_"):
            raise UserError("accuracy predictor: not fitted")
        b = as_batch(archs)
        out = np.empty(len(b), dtype=np.float64)
        for start in range(0, len(b), CHUNK):
            h = ENCODINGS[self.encoding](b[start:start + CHUNK] if len(b) > CHUNK else b)
            for i, (w, bias) in enumerate(self.layers_):
                h = h @ w
                h += bias
                if i < len(self.layers_) - 1:
                    np.maximum(h, 0.0, out=h)
            out[start:start + len(h)] = h[:, 0]
        return out * self.y_std_ + self.y_mean_

    # --- persistence -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        torch = _torch()
        sd = {}
        for i, (w, b) in enumerate(self.layers_):
            sd[f"{2 * i}.weight"] = torch.from_numpy(w.T.copy())
            sd[f"{2 * i}.bias"] = torch.from_numpy(b.copy())
        return sd

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``weights.pt`` (a plain torch state dict) and ``predictor.json`` (metadata) into ``folder``."""
        torch = _torch()
        if not hasattr(self, "layers_"):
            raise UserError("accuracy predictor: not fitted, nothing to save")
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        meta = {"encoding": self.encoding, "hidden": [int(h) for h in self.hidden],
                "y_mean": self.y_mean_, "y_std": self.y_std_, "params": _json_params(self.get_params()),
                "validation": vars(self.validation_) if getattr(self, "validation_", None) else None}
        return save_bundle(folder, KIND, VERSION, meta, {WEIGHTS: buf.getvalue()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AccuracyMLP":
        """Load a predictor saved by :meth:`save`; tampered or other-version files raise one-line errors."""
        meta, blobs = load_bundle(path, KIND, VERSION)
        try:
            params = dict(meta["params"])
            params["hidden"] = tuple(meta["hidden"])
            params["encoding"] = meta["encoding"]
            model = cls(**params)
            model._check_params()
            model.y_mean_, model.y_std_ = float(meta["y_mean"]), float(meta["y_std"])
            val = meta.get("validation")
            model.validation_ = AccuracyMetrics(**val) if val else None
        except (KeyError, TypeError, ValueError) as exc:
            raise PredictorFileError(f"{path}: corrupt accuracy predictor metadata ({exc})") from None
        state = _load_state(blobs[WEIGHTS], f"{path}/{WEIGHTS}")
        model._load_checked(state, f"{path}/{WEIGHTS}")
        return model

    @classmethod
    def from_ofa(cls, path: str | os.PathLike) -> "AccuracyMLP":
        """OFA's pretrained predictor: state dict of a 128-400-400-400-1 MLP over OFA's encoding."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise UserError(f"{path}: cannot read OFA accuracy predictor ({exc.strerror})") from None
        model = cls(hidden=(400, 400, 400), encoding="ofa")
        model.y_mean_, model.y_std_ = 0.0, 1.0
        model._load_checked(_load_state(data, str(path)), str(path))
        model.validation_ = None
        return model

    def _load_checked(self, state: Any, where: str) -> None:
        n = len(self.hidden) + 1
        dims = [ENCODING_DIMS[self.encoding], *[int(h) for h in self.hidden], 1]
        expected = {f"{2 * i}.{p}": (dims[i + 1], dims[i]) if p == "weight" else (dims[i + 1],)
                    for i in range(n) for p in ("weight", "bias")}
        got = {k: tuple(v.shape) for k, v in state.items()} if isinstance(state, dict) and all(
            hasattr(v, "shape") for v in state.values()) else None
        if got != expected:
            raise PredictorFileError(f"{where}: weights do not match a {'-'.join(map(str, dims))} MLP")
        self._set_weights(state)
        if not all(np.all(np.isfinite(w)) and np.all(np.isfinite(b)) for w, b in self.layers_):
            raise PredictorFileError(f"{where}: weights contain NaN or inf")


class _Adam:
    """Adam with L2 weight decay (as ``torch.optim.Adam``), written out: constructing any ``torch.optim``
    optimizer imports torch._dynamo, which costs 5-25 s on this machine for a fit that takes one."""

    def __init__(self, params: list, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        torch = _torch()
        self.params, self.lr, self.wd, self.betas, self.eps = params, lr, weight_decay, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    def step(self) -> None:
        torch = _torch()
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        with torch.no_grad():
            for p, m, v in zip(self.params, self.m, self.v):
                g = p.grad if not self.wd else p.grad.add(p, alpha=self.wd)
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-self.lr / c1)


def _load_state(data: bytes, where: str) -> Any:
    torch = _torch()
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or damaged files
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PredictorFileError(f"{where}: not a loadable torch state dict ({msg[:200]})") from None


def _json_params(params: dict[str, Any]) -> dict[str, Any]:
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}
    json.dumps(out)
    return out


def load_accuracy_predictor(spec: str) -> AccuracyMLP:
    """``ofa:PATH`` (OFA's pretrained state dict) or ``mlp:PATH`` (saved by :meth:`AccuracyMLP.save`)."""
    kind, sep, path = str(spec).partition(":")
    loaders = {"ofa": AccuracyMLP.from_ofa, "mlp": AccuracyMLP.load}
    if not sep or kind not in loaders or not path:
        raise UserError(f"accuracy predictor: expected ofa:PATH or mlp:PATH, got {spec!r}")
    return loaders[kind](path)


# --- data sets -----------------------------------------------------------------------------------

def load_accuracy_jsonl(path: str | os.PathLike) -> tuple[ArchBatch, np.ndarray]:
    """Read ``{"ks","e","d","r"[,"width"],"acc"}`` lines (acc as a fraction); errors name the file and line."""
    archs, acc = read_accuracy_records(path)
    if not archs:
        raise UserError(f"{path}: no records")
    try:
        batch = ArchBatch.from_configs(archs)
    except ArchError as exc:
        raise UserError(f"{path}: {exc}") from None
    return batch, np.asarray(acc)
