"""Accuracy predictors: an MLP over an arch encoding (ours, trainable) and OFA's pretrained one, one interface.

``load_accuracy_predictor("ofa:PATH")`` loads OFA's state dict (``Linear(128,400) ReLU ... Linear(400,1)`` over
:func:`~ofakit.ofa_core.space.encode_ofa`, output top-1 as a fraction); ``load_accuracy_predictor("mlp:PATH")`` loads a
predictor saved by :meth:`AccuracyMLP.save`. Both are :class:`AccuracyMLP` objects whose ``predict(archs)``
returns top-1 fractions for a whole population at once, in float32: the first layer as a sum of 11 rows of tables
derived from its weights (no encoding materialised; equal to encode-then-matmul), then one matmul per layer.
:class:`AccuracyMLP` follows scikit-learn's estimator contract (``fit`` returns self, fitted attributes end in
``_``) without importing scikit-learn, which would cost every command 1-3 s.
"""
from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ofakit.ofa_core.errors import ArchError, UserError
from ofakit.ofa_core.records import read_accuracy_records
from ofakit.ofa_core.space import (D_CHOICES, E_CHOICES, ENCODING_RESOLUTIONS, KS_CHOICES, MAX_DEPTH, N_BLOCKS, N_STAGES,
                            ArchBatch, as_batch, check_encoded_resolutions, choice_indices, encode_general, encode_ofa)

from .base import Archs, checked
from .estimator import Estimator
from .metrics import rank_text

OFA_PREDICTOR_FILE = Path(__file__).resolve().parent / "pretrained" / "ofa_acc_predictor.pth"
"""OFA's pretrained accuracy predictor (mit-han-lab/once-for-all, MIT license; see THIRD_PARTY_NOTICES.md)."""
OFA_WIDTH = 1.2
"""The supernet width OFA's predictor describes (ofa_mbv3_d234_e346_k357_w1.2)."""
from .persist import PredictorFileError, checked_meta, load_bundle, save_bundle
from .schema import AccuracyMeta

if TYPE_CHECKING:
    import pandas as pd

ENCODINGS: dict[str, Callable[[ArchBatch], np.ndarray]] = {"ofa": encode_ofa, "general": encode_general}
ENCODING_DIMS = {"ofa": 128, "general": 137}
KIND, VERSION, WEIGHTS = "accuracy-mlp", 1, "weights.pt"
CHUNK = 4096  # subnets per pass: a few MB of activations per layer, within the L3


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
        return (f"n={self.n}  RMSE={self.rmse_points:.3f} points  "
                f"{rank_text('Kendall tau', self.kendall_tau, self.n)}  {rank_text('Spearman', self.spearman, self.n)}")


def accuracy_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> AccuracyMetrics:
    """Compare predicted and true top-1 fractions."""
    from scipy import stats  # 1 s to import: only commands that report metrics pay for it

    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    rmse = float(np.sqrt(np.mean((y_true - y_pred) ** 2)) * 100.0)
    if y_true.size < 3 or np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
        return AccuracyMetrics(rmse, float("nan"), float("nan"), int(y_true.size))
    return AccuracyMetrics(rmse, float(stats.kendalltau(y_true, y_pred).statistic),
                           float(stats.spearmanr(y_true, y_pred).statistic), int(y_true.size))


def _validation_json(metrics: AccuracyMetrics | None) -> dict[str, Any] | None:
    """Held-out metrics as stored: a rank correlation undefined for too few subnets (NaN) is ``null``."""
    if metrics is None:
        return None
    return {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in vars(metrics).items()}


class AccuracyMLP(Estimator):
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
        self.width_ = float(batch.width)
        return self

    # --- inference -------------------------------------------------------------------------
    def _set_weights(self, state: dict[str, Any]) -> None:
        """Keep the layers as read-only float32 numpy arrays (inference) and the state dict for saving. The
        first-layer tables derived from them are rebuilt on the next predict (keyed on this list)."""
        keys = sorted({k.split(".")[0] for k in state}, key=int)
        layers = []
        for k in keys:
            w = state[f"{k}.weight"].detach().cpu().numpy().astype(np.float32).T.copy()
            b = state[f"{k}.bias"].detach().cpu().numpy().astype(np.float32).copy()
            w.setflags(write=False)
            b.setflags(write=False)
            layers.append((w, b))
        self.layers_ = layers

    def _net(self) -> "_TableNet":
        """The inference net for the current weights and encoding, built once per ``layers_`` list."""
        net = getattr(self, "_table_net", None)
        if net is None or net.layers is not self.layers_ or net.encoding != self.encoding:
            net = self._table_net = _TableNet(self.layers_, self.encoding)
        return net

    def predict(self, archs: Archs) -> np.ndarray:
        """Predicted top-1 (fraction) for every subnet, shape (N,)."""
        if not hasattr(self, "layers_"):
            raise UserError("accuracy predictor: not fitted")
        out = self._net().forward(as_batch(archs))
        out *= self.y_std_
        out += self.y_mean_
        return checked(out, getattr(self, "source_", "accuracy predictor"), "top-1")

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
                "validation": _validation_json(getattr(self, "validation_", None)),
                "width": getattr(self, "width_", None)}
        return save_bundle(folder, KIND, VERSION, meta, {WEIGHTS: buf.getvalue()}, AccuracyMeta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AccuracyMLP":
        """Load a predictor saved by :meth:`save`; tampered or other-version files raise one-line errors."""
        meta, blobs = load_bundle(path, KIND, VERSION)
        checked_meta(path, meta, AccuracyMeta)
        try:
            params = dict(meta["params"])
            params["hidden"] = tuple(meta["hidden"])
            params["encoding"] = meta["encoding"]
            model = cls(**params)
            model._check_params()
            model.y_mean_, model.y_std_ = float(meta["y_mean"]), float(meta["y_std"])
            model.source_ = str(path)
            val = meta.get("validation")
            model.validation_ = (AccuracyMetrics(**{k: float("nan") if v is None else v for k, v in val.items()})
                                 if val else None)
            model.width_ = None if meta.get("width") is None else float(meta["width"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PredictorFileError(f"{path}: corrupt accuracy predictor metadata ({exc})") from None
        state = _load_state(blobs[WEIGHTS], f"{path}/{WEIGHTS}")
        model._load_checked(state, f"{path}/{WEIGHTS}")
        return model

    @classmethod
    def from_ofa(cls, path: str | os.PathLike = "") -> "AccuracyMLP":
        """OFA's pretrained predictor (of the width-1.2 supernet): state dict of a 128-400-400-400-1 MLP over OFA's
        encoding; by default the copy shipped with ofakit."""
        path = path or OFA_PREDICTOR_FILE
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise UserError(f"{path}: cannot read OFA accuracy predictor ({exc.strerror})") from None
        model = cls(hidden=(400, 400, 400), encoding="ofa")
        model.y_mean_, model.y_std_ = 0.0, 1.0
        model._load_checked(_load_state(data, str(path)), str(path))
        model.validation_ = None
        model.width_ = OFA_WIDTH
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


# --- inference: the first layer as table look-ups -------------------------------------------------
# ``encode(x) @ W1`` is a sum over factors of x whose one-hot columns are disjoint: per stage, its first
# min(D_CHOICES) blocks (every depth runs them) and (its depth, its other blocks); and the resolution. Each
# factor's share is tabulated once per set of weights by running the encoder itself on subnets that differ from
# one base subnet in that factor only, so the column layout lives in ofa_core.space alone. A prediction is then
# one embedding-bag sum of 2 * N_STAGES + 1 table rows instead of encoding and a dense first layer.

_PER_BLOCK = len(KS_CHOICES) * len(E_CHOICES)  # (ks, e) combinations of one block
_FIXED = min(D_CHOICES)  # leading blocks of a stage that every depth runs
_RADIX_A = (_PER_BLOCK,) * _FIXED  # mixed-radix digits of a stage's first factor code: those blocks' (ks, e)
_RADIX_B = (len(D_CHOICES),) + (_PER_BLOCK,) * (MAX_DEPTH - _FIXED)  # second: depth, then the other blocks
_ROWS_A, _ROWS_B = math.prod(_RADIX_A), math.prod(_RADIX_B)
_DEPTH_WEIGHT = _ROWS_B // len(D_CHOICES)
# weight of each block position's (ks, e) code in its stage's two factor codes, and each code's first table row
_BLOCK_WEIGHTS = np.zeros((MAX_DEPTH, 2), np.int64)
_BLOCK_WEIGHTS[:_FIXED, 0] = _PER_BLOCK ** np.arange(_FIXED)[::-1]
_BLOCK_WEIGHTS[_FIXED:, 1] = _PER_BLOCK ** np.arange(MAX_DEPTH - _FIXED)[::-1]
_FIRST_ROWS = np.stack([np.arange(N_STAGES) * _ROWS_A, N_STAGES * _ROWS_A + np.arange(N_STAGES) * _ROWS_B], 1)


def _factor_codes(ks: np.ndarray, e: np.ndarray, d: np.ndarray, out: np.ndarray) -> None:
    """Choice positions (N, 20), (N, 20), (N, 5) -> the table rows of each stage's two factors (mixed radix as
    ``_RADIX_A`` and ``_RADIX_B``) into ``out`` (N, N_STAGES, 2)."""
    c = ks * len(E_CHOICES)
    c += e
    np.matmul(c.reshape(-1, N_STAGES, MAX_DEPTH), _BLOCK_WEIGHTS, out=out)
    out[:, :, 1] += d * _DEPTH_WEIGHT
    out += _FIRST_ROWS


def _factor_variants(span: range) -> ArchBatch:
    """A base subnet (row 0: first choices everywhere, lowest resolution), then one subnet per value of each
    factor in table-row order, every other factor kept at the base."""
    n = 1 + N_STAGES * (_ROWS_A + _ROWS_B) + len(span)
    ks, e = np.zeros((n, N_BLOCKS), np.int64), np.zeros((n, N_BLOCKS), np.int64)
    d, r = np.zeros((n, N_STAGES), np.int64), np.full(n, span.start, np.int64)
    row = 1
    for radix, first in ((_RADIX_A, 0), (_RADIX_B, _FIXED)):
        digits = np.unravel_index(np.arange(math.prod(radix)), radix)
        for s in range(N_STAGES):
            rows = slice(row, row + len(digits[0]))
            if first:  # the depth leads the second factor's code
                d[rows, s] = digits[0]
            for j, cj in enumerate(digits[1:] if first else digits):
                blk = s * MAX_DEPTH + first + j
                ks[rows, blk], e[rows, blk] = np.divmod(cj, len(E_CHOICES))
            row += len(digits[0])
    r[row:] = span
    return ArchBatch(np.asarray(KS_CHOICES)[ks], np.asarray(E_CHOICES)[e], np.asarray(D_CHOICES)[d], r)


class _TableNet:
    """An MLP over an encoding with its first layer as table look-ups; ``forward`` takes an ArchBatch."""

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]], encoding: str):
        torch = _torch()
        self.layers, self.encoding = layers, encoding
        span = ENCODING_RESOLUTIONS[encoding]
        x = ENCODINGS[encoding](_factor_variants(span)).astype(np.float64)
        # one table row per distinct encoded factor value (a depth hides its skipped blocks' choices; OFA's r
        # one-hot spans 16 resolutions), the resolution rows kept apart: they also carry the base and the bias
        is_r = np.arange(len(x) - 1) >= len(x) - 1 - len(span)
        keys, self.row_of_code = np.unique(np.c_[is_r, x[1:] - x[0]], axis=0, return_inverse=True)
        w1, b1 = (a.astype(np.float64) for a in layers[0])
        table = keys[:, 1:] @ w1
        table[keys[:, 0] == 1] += x[0] @ w1 + b1
        self.table = torch.from_numpy(table.astype(np.float32))
        self.r_offset = N_STAGES * (_ROWS_A + _ROWS_B) - span.start
        self.rest = [(torch.from_numpy(w.copy()), torch.from_numpy(bias.copy())) for w, bias in layers[1:]]

    def rows(self, b: ArchBatch) -> np.ndarray:
        """(N, 2 * N_STAGES + 1) table rows per subnet; bad values raise ArchError (a UserError)."""
        ks, e, d = choice_indices(b)
        check_encoded_resolutions(b.r, self.encoding)
        idx = np.empty((len(b), 2 * N_STAGES + 1), np.int64)
        _factor_codes(ks, e, d, idx[:, :-1].reshape(-1, N_STAGES, 2))  # a view: each row's first 10 as 5 x 2
        np.add(b.r, self.r_offset, out=idx[:, -1])
        return np.take(self.row_of_code, idx)

    def forward(self, b: ArchBatch) -> np.ndarray:
        """The net's outputs (N,) as float64 (before de-standardising), ``CHUNK`` subnets per pass (one for a
        search population). All in torch: numpy's BLAS threads next to torch's OpenMP threads fight over the
        cores."""
        torch = _torch()
        idx = torch.from_numpy(self.rows(b))
        out = np.empty(len(b))
        with torch.inference_mode():
            for start in range(0, len(b), CHUNK):
                rows = idx[start:start + CHUNK]
                h = torch.nn.functional.embedding_bag(rows, self.table, mode="sum")  # (B, bag) rows: one bag each
                for w, bias in self.rest:
                    h = torch.addmm(bias, h.relu_(), w)
                out[start:start + len(h)] = h[:, 0].numpy()
        return out


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
    """``ofa`` (OFA's pretrained predictor shipped with ofakit), ``ofa:PATH`` (an OFA state dict file) or
    ``mlp:PATH`` (saved by :meth:`AccuracyMLP.save`)."""
    kind, sep, path = str(spec).partition(":")
    loaders = {"ofa": AccuracyMLP.from_ofa, "mlp": AccuracyMLP.load}
    if kind not in loaders or (sep and not path) or (kind == "mlp" and not path):
        raise UserError(f"accuracy predictor: expected ofa, ofa:PATH or mlp:PATH, got {spec!r}")
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


def load_accuracy_frame(path: str | os.PathLike) -> "pd.DataFrame":
    """The accuracy records of ``path`` as a pandas DataFrame: one row per subnet (``ks``, ``e``, ``d`` as lists,
    ``r``, ``width``, ``acc`` as a fraction). The file stays JSON lines."""
    import pandas as pd

    archs, acc = read_accuracy_records(path)
    return pd.DataFrame([{"ks": list(a.ks), "e": list(a.e), "d": list(a.d), "r": a.r, "width": a.width, "acc": v}
                         for a, v in zip(archs, acc)], columns=["ks", "e", "d", "r", "width", "acc"])
