"""Learned latency regressors: scikit-learn models on subnet features, trained on measured end-to-end subnets.

:class:`LatencyRegressor` fits ridge, gradient boosting or a random forest (registry :data:`MODELS`) on
:func:`~ofakit.predictors.features.latency_features` — the device's LUT sum and per-stage sums when a profile is given,
plus FLOPs, parameters, depth, resolution and layer counts. With a profile it learns the ratio measured/LUT sum
(a correction that extrapolates like the LUT); without one it learns log-milliseconds.

After ``fit`` the sklearn model is compiled into plain arrays (:class:`LinearModel` or :class:`TreeEnsemble`)
that predict with numpy and save as JSON: no pickle, no dependence on the sklearn version that trained them.
The profile's LUT rows are saved too, so a saved regressor is self-contained.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import Ridge

from ofakit.device_profiles import OpStats, Profile, ProfileMeta, load_profile
from ofakit.device_profiles.schema import MAX_MS
from ofakit.ofa_core.errors import ArchError, UserError
from ofakit.ofa_core.records import parse_csv_arch_row
from ofakit.ofa_core.space import ArchBatch, ArchConfig, as_batch
from ofakit.ofa_core.strict import csv_rows, parse_json, read_text, validated

from .base import Archs, checked
from .features import latency_features, measured_latencies
from .persist import PredictorFileError, bundle_json, checked_meta, load_bundle, resolve_bundle, save_bundle
from .registry import not_fitted, register_predictor
from .schema import COMPILED_SCHEMAS, RegressorMeta, RegressorModel

KIND, VERSION = "latency-regressor", 1
MS_COLUMNS = ("ms", "measured_ms", "latency_ms")


def load_measured(path: str | os.PathLike, width: float | None = None) -> tuple[ArchBatch, np.ndarray]:
    """Measured subnets: a CSV with an ``arch`` column (OFA's dict as JSON, as ``ofakit validate`` writes it) or
    ``ks, e, d, r`` columns (JSON lists / int), and a latency column (``ms``, ``measured_ms`` or ``latency_ms``);
    or JSONL of arch dicts with such a field. ``width`` overrides the records' own (default 1.0). Errors name
    the file and line."""
    path = Path(path)
    text = read_text(path, "measurements")
    if path.suffix in (".jsonl", ".json"):
        records: list[tuple[int, Any]] = [(no, line) for no, line in enumerate(text.splitlines(), start=1)
                                          if line.strip()]
        parse: Callable[[Any], Any] = lambda line: parse_json(line, "record")  # noqa: E731
    else:
        records = list(csv_rows(text, path))
        parse = parse_csv_arch_row
    archs, ms = [], []
    seen: dict[ArchConfig, float] = {}
    for no, raw in records:
        try:
            rec = parse(raw)
            if not isinstance(rec, dict):
                raise UserError("expected an arch record")
            col = next((c for c in MS_COLUMNS if rec.get(c) not in (None, "")), None)
            if col is None:
                raise UserError(f"no latency (one of {', '.join(MS_COLUMNS)})")
            value = float(rec[col]) if not isinstance(rec[col], bool) else math.nan
            if not (np.isfinite(value) and 0 < value <= MAX_MS):
                raise UserError(f"{col}: expected a positive latency, got {rec[col]!r}")
            arch = ArchConfig.from_ofa_dict({k: rec[k] for k in ("ks", "e", "d", "r", "width") if k in rec}, width)
            if seen.setdefault(arch, value) != value:
                raise UserError(f"this subnet is listed before with {seen[arch]} ms")
            archs.append(arch)
            ms.append(value)
        except (json.JSONDecodeError, ValueError, TypeError) as exc:
            if isinstance(exc, UserError):
                raise UserError(f"{path}:{no}: {exc}") from None
            raise UserError(f"{path}:{no}: cannot parse ({exc})") from None
    if not archs:
        raise UserError(f"{path}: no measured subnets")
    try:
        return ArchBatch.from_configs(archs), np.asarray(ms)
    except ArchError as exc:
        raise UserError(f"{path}: {exc}") from None


@dataclass
class LinearModel:
    """``(x - mean) / scale @ coef + intercept``."""

    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (x - np.asarray(self.mean)) / np.asarray(self.scale) @ np.asarray(self.coef) + self.intercept


@dataclass
class TreeEnsemble:
    """``base + scale * combine(tree outputs)`` over binary trees stored as arrays (sklearn's layout: a node
    with ``left == -1`` is a leaf; go left when ``x[feature] <= threshold``, x compared as float32)."""

    base: float
    scale: float
    combine: str  # "sum" or "mean"
    trees: list[dict[str, list]]

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32).astype(np.float64)
        rows = np.arange(x.shape[0])
        total = np.zeros(x.shape[0])
        for t in self.trees:
            left, right = np.asarray(t["left"]), np.asarray(t["right"])
            feat, thr, val = np.asarray(t["feature"]), np.asarray(t["threshold"]), np.asarray(t["value"])
            node = np.zeros(x.shape[0], dtype=np.int64)
            while True:
                inner = left[node] >= 0
                if not inner.any():
                    break
                go_left = x[rows, np.maximum(feat[node], 0)] <= thr[node]
                node = np.where(inner, np.where(go_left, left[node], right[node]), node)
            total += val[node]
        if self.combine == "mean":
            total /= max(len(self.trees), 1)
        return self.base + self.scale * total

    def check(self, n_features: int) -> None:
        """Raise ValueError unless every tree is well formed for ``n_features`` inputs."""
        if self.combine not in ("sum", "mean") or not self.trees:
            raise ValueError("bad ensemble")
        for t in self.trees:
            n = len(t["left"])
            arrays = [np.asarray(t[k]) for k in ("left", "right", "feature", "threshold", "value")]
            if any(a.shape != (n,) for a in arrays):
                raise ValueError("tree arrays of different lengths")
            left, right, feat = arrays[:3]
            inner = left >= 0
            if np.any((left[inner] <= np.flatnonzero(inner)) | (right[inner] <= np.flatnonzero(inner))
                      | (left[inner] >= n) | (right[inner] >= n)):  # children after parents: no cycles
                raise ValueError("bad tree links")
            if np.any((feat[inner] < 0) | (feat[inner] >= n_features)):
                raise ValueError("feature index out of range")


def _trees(model: Any) -> list[dict[str, list]]:
    estimators = model.estimators_.ravel() if hasattr(model.estimators_, "ravel") else model.estimators_
    out = []
    for est in estimators:
        t = est.tree_
        out.append({"left": t.children_left.tolist(), "right": t.children_right.tolist(),
                    "feature": t.feature.tolist(), "threshold": t.threshold.tolist(),
                    "value": t.value[:, 0, 0].tolist()})
    return out


def _compile_ridge(model: Ridge, mean: np.ndarray, scale: np.ndarray) -> LinearModel:
    return LinearModel(mean.tolist(), scale.tolist(), np.ravel(model.coef_).tolist(), float(model.intercept_))


def _compile_gbr(model: GradientBoostingRegressor, *_: Any) -> TreeEnsemble:
    return TreeEnsemble(float(model.init_.constant_.ravel()[0]), float(model.learning_rate), "sum", _trees(model))


def _compile_rf(model: RandomForestRegressor, *_: Any) -> TreeEnsemble:
    return TreeEnsemble(0.0, 1.0, "mean", _trees(model))


@dataclass(frozen=True)
class ModelEntry:
    """A registered model family: how to build the sklearn estimator and how to compile it to arrays."""

    build: Callable[["LatencyRegressor"], Any]
    compile: Callable[..., LinearModel | TreeEnsemble]
    standardize: bool


MODELS: dict[str, ModelEntry] = {
    "ridge": ModelEntry(lambda p: Ridge(alpha=p.alpha), _compile_ridge, True),
    "gbr": ModelEntry(lambda p: GradientBoostingRegressor(
        n_estimators=p.n_estimators, max_depth=p.max_depth, learning_rate=p.learning_rate, subsample=0.8,
        random_state=p.random_state), _compile_gbr, False),
    "rf": ModelEntry(lambda p: RandomForestRegressor(
        n_estimators=p.n_estimators, min_samples_leaf=2, max_features=0.5, random_state=p.random_state),
        _compile_rf, False),
}
COMPILED = {"linear": LinearModel, "trees": TreeEnsemble}


@register_predictor(KIND, saved=True)
class LatencyRegressor(RegressorMixin, BaseEstimator):
    """Latency (ms) from subnet features; ``model`` is one of :data:`MODELS` (ridge, gbr, rf).

    ``profile`` (a :class:`~ofakit.device_profiles.Profile` or a profile name) adds LUT-sum features and makes the
    target the ratio measured / LUT sum; without it the target is log-milliseconds.
    """

    def __init__(self, model: str = "ridge", profile: Profile | str | None = None, alpha: float = 1.0,
                 n_estimators: int = 200, max_depth: int = 3, learning_rate: float = 0.05, random_state: int = 0):
        self.model = model
        self.profile = profile
        self.alpha = alpha
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.random_state = random_state

    def fit(self, archs: Archs, ms: np.ndarray) -> "LatencyRegressor":
        """Fit on measured subnets and their end-to-end latencies (ms); returns self."""
        if self.model not in MODELS:
            raise UserError(f"model: expected one of {sorted(MODELS)}, got {self.model!r}")
        entry = MODELS[self.model]
        prof = load_profile(self.profile) if isinstance(self.profile, str) else self.profile
        b, y = measured_latencies(archs, ms, 3, "ms: need at least {min_n} measured subnets to fit, got {n}")
        self.table_ = prof.table() if prof is not None else None
        self.lut_rows_ = ([[s.key, s.resolution, s.ms] for s in prof] if prof is not None else None)
        self.profile_meta_ = ({"name": prof.name, "width": prof.meta.width, "resolutions": list(
            prof.meta.resolutions)} if prof is not None else None)
        self.width_ = b.width
        x, self.feature_names_ = latency_features(b, self.table_)
        target = self._to_target(y, x)
        if entry.standardize:
            mean, scale = x.mean(axis=0), x.std(axis=0)
            scale[scale == 0] = 1.0
            xs = (x - mean) / scale
        else:
            mean = scale = np.zeros(0)
            xs = x
        est = entry.build(self).fit(xs, target)
        self.estimator_ = est  # the sklearn model (not saved; the compiled arrays are)
        self.compiled_ = entry.compile(est, mean, scale)
        self.n_features_in_ = x.shape[1]
        self.n_train_ = len(b)
        return self

    def _to_target(self, ms: np.ndarray, x: np.ndarray) -> np.ndarray:
        return ms / x[:, 0] if self.table_ is not None else np.log(ms)

    def _from_target(self, t: np.ndarray, x: np.ndarray) -> np.ndarray:
        return t * x[:, 0] if self.table_ is not None else np.exp(t)

    def predict(self, archs: Archs) -> np.ndarray:
        """Predicted latency (ms) of every subnet, shape (N,)."""
        if not hasattr(self, "compiled_"):
            raise not_fitted("latency regressor: not fitted")
        b = as_batch(archs)
        if b.width != self.width_:
            raise UserError(f"width: this regressor was fitted on width {self.width_}, got {b.width}")
        x, _ = latency_features(b, self.table_)
        return checked(self._from_target(self.compiled_.predict(x), x), getattr(self, "source_", "latency regressor"))

    # --- persistence -----------------------------------------------------------------------
    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``predictor.json`` (parameters, compiled model, the profile's LUT rows) and ``model.json``."""
        if not hasattr(self, "compiled_"):
            raise not_fitted("latency regressor: not fitted, nothing to save")
        params = self.get_params()
        params["profile"] = self.profile_meta_["name"] if self.profile_meta_ else None
        meta = {"params": params, "width": self.width_, "feature_names": list(self.feature_names_),
                "n_train": self.n_train_, "profile": self.profile_meta_,
                "compiled_kind": "linear" if isinstance(self.compiled_, LinearModel) else "trees"}
        model = json.dumps({"compiled": asdict(self.compiled_), "lut_rows": self.lut_rows_}).encode()
        return save_bundle(folder, KIND, VERSION, meta, {"model.json": model}, RegressorMeta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatencyRegressor":
        """Load a regressor saved by :meth:`save`; tampered or other-version files raise one-line errors."""
        meta, blobs = load_bundle(path, KIND, VERSION)
        checked_meta(path, meta, RegressorMeta)
        data = bundle_json(path, blobs, "model.json", "latency regressor model")
        where = resolve_bundle(path) / "model.json"
        validated(RegressorModel, data, where, PredictorFileError)
        validated(COMPILED_SCHEMAS.get(meta["compiled_kind"], RegressorModel), data["compiled"], f"{where}: compiled",
                  PredictorFileError)
        try:
            reg = cls(**meta["params"])
            if reg.model not in MODELS:
                raise ValueError(f"unknown model {reg.model!r}")
            reg.width_ = float(meta["width"])
            reg.source_ = str(resolve_bundle(path))
            reg.n_train_ = int(meta["n_train"])
            reg.profile_meta_ = meta["profile"]
            reg.lut_rows_ = data["lut_rows"]
            if reg.profile_meta_ is not None:
                pm = reg.profile_meta_
                prof = Profile(ProfileMeta(name=pm["name"], width=pm["width"], resolutions=pm["resolutions"]),
                               [OpStats(key=k, resolution=r, ms=float(v)) for k, r, v in reg.lut_rows_])
                reg.table_ = prof.table()
            else:
                reg.table_ = None
            reg.compiled_ = COMPILED[meta["compiled_kind"]](**data["compiled"])
            reg.feature_names_ = tuple(meta["feature_names"])
            reg.n_features_in_ = len(reg.feature_names_)
            probe = as_batch(_probe_arch(reg.width_, reg))
            x, names = latency_features(probe, reg.table_)
            if names != reg.feature_names_:
                raise ValueError("features differ from this ofakit's")
            if isinstance(reg.compiled_, TreeEnsemble):
                reg.compiled_.check(reg.n_features_in_)
            elif {len(reg.compiled_.coef), len(reg.compiled_.mean), len(reg.compiled_.scale)} != {reg.n_features_in_}:
                raise ValueError("coefficient count does not match the features")
        except (KeyError, TypeError, ValueError, UserError) as exc:
            raise PredictorFileError(f"{path}: corrupt latency regressor ({exc})") from None
        return reg


def _probe_arch(width: float, reg: LatencyRegressor):
    from ofakit.ofa_core.space import sample_arch, space_for_width
    spec = space_for_width(width)
    res = reg.profile_meta_["resolutions"] if reg.profile_meta_ else spec.resolutions
    return sample_arch(np.random.default_rng(0), spec, resolutions=[res[0]])
