"""Lookup-table predictors: a subnet's latency is a sum over its operators.

:class:`LUTPredictor` is the plain sum of the profile's per-op latencies. :class:`CalibratedLUTPredictor` corrects
it with a linear model fitted on a few whole subnets measured on the device: ``a * LUT sum + b * params (M) + d``
(features configurable), fitted on relative error with a Huber loss. On this CPU the op count as a further
feature over-fitted 30 calibration subnets (30 held-out subnets of the same job, two jobs: 90-93% within ±5%
with it, 97-100% without). An op timed alone keeps its weights in cache while a whole network streams them, and
every network pays fixed per-run costs, so the plain sum runs low on CPUs; the correction is linear in per-op
quantities, so it folds into one per-op table and predicts exactly as fast as the plain sum. Fitted parameters
are stored in the profile's ``calibration`` (plain JSON).

Whole-network latency on a shared host drifts by several percent over minutes while single ops do not. A *device
state factor* (median ratio now / at calibration time over a few calibration subnets re-measured as *anchors*,
:func:`state_factor`) follows that drift: `ofakit profile recalibrate` stores one in ``calibration["state"]`` and
the calibrated predictor multiplies its folded table by it (``state=False`` ignores it).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from ofakit.device_profiles import Profile, ProfileError, load_profile
from ofakit.ofa_core.ops import STEM, MissingOpError, OpSpec, SlotTable
from ofakit.ofa_core.errors import UserError, literal
from ofakit.ofa_core.space import ArchConfig, as_batch, space_for_width

from .base import Archs, checked
from .registry import not_fitted, register_predictor

# Per-op features of the calibration model; a subnet's feature is the sum over its ops.
FEATURES: dict[str, Callable[[OpSpec, float], float]] = {
    "lut_ms": lambda op, ms: ms,
    "params_m": lambda op, ms: op.params / 1e6,
    "macs_g": lambda op, ms: op.macs / 1e9,
    "n_ops": lambda op, ms: 1.0,
    "input_area": lambda op, ms: op.in_shape[0] * op.in_shape[1] / 224.0 ** 2 if op.kind == STEM else 0.0,
}
DEFAULT_FEATURES = ("lut_ms", "params_m")
CALIBRATION_MODEL = "linear-per-op-v1"
STATE_KEY = "state"  # calibration[STATE_KEY]: the stored device-state factor (absent: 1.0)
MIN_ANCHORS = 3  # fewer anchors measured both times: no state factor


def _as_profile(profile: Profile | str) -> Profile:
    return load_profile(profile) if isinstance(profile, str) else profile


def _source(profile: Profile) -> str:
    """How messages name a profile: its folder when it has one."""
    return str(profile.path) if profile.path is not None else f"profile {profile.name!r}"


def _predict(profile: Profile, table: SlotTable, archs: Archs) -> np.ndarray:
    """``table``'s sums for ``archs``, checked; archs of another width than the profile's, a missing operator or a
    bad value are one-line errors naming the profile."""
    batch = as_batch(archs)
    if abs(batch.width - profile.meta.width) > 1e-9:
        raise UserError(literal(f"width: profile {profile.name!r} describes the width-{profile.meta.width} supernet, "
                                f"the arch has width {batch.width}") + f" (pass {{width}} {profile.meta.width})",
                        params=("width",))
    try:
        return checked(table.evaluate(batch), _source(profile))
    except MissingOpError as exc:
        raise MissingOpError(f"{_source(profile)}: {exc}") from None


def calibration_archs(profile: Profile) -> list[ArchConfig]:
    """The subnets a profile's calibration was fitted on (never to be reused as test subnets)."""
    out = []
    for a in (profile.meta.calibration or {}).get("fit_archs", []):
        try:
            out.append(ArchConfig.from_json(a) if isinstance(a, str) else ArchConfig.from_ofa_dict(a))
        except (UserError, TypeError) as exc:
            raise ProfileError(f"{_source(profile)}: unreadable calibration subnet ({exc})") from None
    return out


def anchor_archs(profile: Profile, n: int) -> list[ArchConfig]:
    """``n`` of the profile's calibration subnets, evenly spaced over their stored order (MAC-count quantiles for
    profiles made by ofakit, so small and large subnets alike), all of them when ``n`` is larger."""
    cal = calibration_archs(profile)
    if n <= 0 or not cal:
        return []
    if n >= len(cal):
        return cal
    return [cal[int(i)] for i in np.round(np.linspace(0, len(cal) - 1, n)).astype(int)]


def state_factor(then_ms: Any, now_ms: Any, minimum: int = MIN_ANCHORS) -> Optional[float]:
    """Median of now / then over the anchors measured both times; None when fewer than ``minimum``."""
    then, now = np.asarray(then_ms, dtype=float), np.asarray(now_ms, dtype=float)
    ok = np.isfinite(then) & np.isfinite(now) & (then > 0) & (now > 0)
    return float(np.median(now[ok] / then[ok])) if ok.sum() >= max(minimum, 1) else None


def anchor_factor(profile: Profile, anchors: Sequence[ArchConfig], now_ms: Sequence[float]) -> Optional[float]:
    """:func:`state_factor` of ``anchors`` measured now (``now_ms``) against the profile's calibration
    measurements of the same subnets (anchors it did not calibrate on are skipped)."""
    then = dict(zip(calibration_archs(profile), (profile.meta.calibration or {}).get("fit_measured_ms") or []))
    pairs = [(then[a], m) for a, m in zip(anchors, now_ms) if a in then]
    return state_factor([p[0] for p in pairs], [p[1] for p in pairs]) if pairs else None


def stored_state(profile: Profile) -> dict[str, Any]:
    """The device-state factor stored with the profile's calibration (``{}`` when none; checked)."""
    state = (profile.meta.calibration or {}).get(STATE_KEY) or {}
    f = state.get("factor") if isinstance(state, dict) else None
    if state and not (isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) and f > 0):
        raise ProfileError(f"{_source(profile)}: unreadable calibration state (factor {f!r}; re-run "
                           f"`ofakit profile recalibrate`)")
    return state


class _Params:
    """scikit-learn's parameter protocol (``get_params``/``set_params`` from ``__init__``'s keyword arguments), so
    :func:`sklearn.base.clone` and sklearn's tools work without importing sklearn here."""

    @classmethod
    def _param_names(cls) -> list[str]:
        import inspect

        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {p: getattr(self, p) for p in self._param_names()}

    def set_params(self, **params: Any) -> "_Params":
        for k, v in params.items():
            if k not in self._param_names():
                raise ValueError(f"invalid parameter {k!r} for {type(self).__name__}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(v, 'name', v)!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


@register_predictor("lut")
class LUTPredictor(_Params):
    """Vectorized LUT sum over a device profile (milliseconds)."""

    def __init__(self, profile: Profile | str):
        self.profile = _as_profile(profile)

    def predict(self, archs: Archs) -> np.ndarray:
        return _predict(self.profile, self.profile.table(), archs)


@register_predictor("calibrated")
class CalibratedLUTPredictor(_Params):
    """LUT sum corrected by a linear model fitted on measured whole subnets (scikit-learn's estimator contract:
    ``fit`` returns self; fitted attributes ``features_``, ``coef_``, ``intercept_``, ``n_fit_``; ``clone``
    works). Without ``fit``, it uses the calibration stored in the profile (its own features, which then win
    over ``features``), scaled by its stored device-state factor ``state_factor_`` unless ``state=False``. A
    fresh ``fit`` has no state factor (1.0): it is relative to its own measurements."""

    def __init__(self, profile: Profile | str, features: Sequence[str] = DEFAULT_FEATURES, loss: str = "huber",
                 state: bool = True):
        self.profile = _as_profile(profile)
        self.features = features
        self.loss = loss
        self.state = state

    # --- fitting ------------------------------------------------------------------------------------------------
    def feature_matrix(self, archs: Archs, features: Sequence[str] | None = None) -> np.ndarray:
        """(N, F) per-subnet sums of the per-op ``features`` (default: the ``features`` parameter)."""
        b = as_batch(archs)
        return np.stack([self._table(lambda op, ms, f=f: FEATURES[f](op, ms)).evaluate(b)
                         for f in (self.features if features is None else features)], axis=1)

    def fit(self, archs: Archs, measured_ms: Sequence[float]) -> "CalibratedLUTPredictor":
        """Fit on relative error ``pred / measured - 1``: least squares (``loss="squared"``) or Huber
        (``loss="huber"``, default: iteratively reweighted, so one subnet measured in a slow spell does not tilt
        the fit)."""
        if self.loss not in ("huber", "squared"):
            raise ValueError(f"loss must be 'huber' or 'squared', got {self.loss!r}")
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown:
            raise ValueError(f"unknown calibration feature {unknown[0]!r} (known: {', '.join(FEATURES)})")
        y = np.asarray(measured_ms, dtype=float)
        X = self.feature_matrix(archs)
        ok = np.isfinite(y) & (y > 0)
        if ok.sum() < len(self.features) + 1:
            raise ValueError(f"calibration needs at least {len(self.features) + 1} measured subnets, "
                             f"got {int(ok.sum())}")
        A = np.concatenate([X[ok], np.ones((ok.sum(), 1))], axis=1) / y[ok, None]
        w = np.ones(len(A))
        for _ in range(50 if self.loss == "huber" else 1):
            sol, *_ = np.linalg.lstsq(A * np.sqrt(w)[:, None], np.sqrt(w), rcond=None)
            r = A @ sol - 1.0
            scale = 1.4826 * np.median(np.abs(r - np.median(r)))
            if scale <= 1e-12:
                break
            c = 1.345 * scale
            w_new = np.minimum(1.0, c / np.maximum(np.abs(r), 1e-300))
            if np.allclose(w_new, w, atol=1e-6):
                break
            w = w_new
        self.features_ = tuple(self.features)
        self.coef_ = sol[:-1]
        self.intercept_ = float(sol[-1])
        self.n_fit_ = int(ok.sum())
        self._state_factor = 1.0
        self._folded = None
        return self

    def to_calibration(self, archs: Archs | None = None, measured_ms: Sequence[float] | None = None
                       ) -> dict[str, Any]:
        """Plain-JSON parameters for ``profile.meta.calibration`` (with the fitting data when given)."""
        self._check_fitted()
        out: dict[str, Any] = {"model": CALIBRATION_MODEL, "features": list(self.features_),
                               "coef": [float(c) for c in self.coef_], "intercept": self.intercept_,
                               "n_fit": self.n_fit_, "loss": getattr(self, "loss", "huber")}
        if archs is not None and measured_ms is not None:
            b = as_batch(archs)
            out["fit_archs"] = [a.to_json() for a in b.to_configs()]  # one compact line each
            out["fit_measured_ms"] = [float(v) for v in measured_ms]
            err = self.predict(b) / np.asarray(measured_ms, dtype=float) - 1
            out["fit_rmse_pct"] = float(np.sqrt(np.nanmean(err ** 2)) * 100)
        return out

    def _check_fitted(self) -> None:
        if getattr(self, "coef_", None) is not None:
            return
        cal = self.profile.meta.calibration
        if not cal:
            raise not_fitted(f"{_source(self.profile)} has no calibration (measure one with `ofakit profile`, or "
                             f"call fit)", ProfileError)
        self._load(cal)

    def _load(self, cal: Mapping[str, Any]) -> None:
        try:
            if cal.get("model") != CALIBRATION_MODEL:
                raise ValueError(f"model {cal.get('model')!r}")
            feats = tuple(cal["features"])
            coef = np.asarray(cal["coef"], dtype=float)
            if len(coef) != len(feats) or any(f not in FEATURES for f in feats):
                raise ValueError("features and coef do not match")
            self.features_, self.coef_, self.intercept_ = feats, coef, float(cal["intercept"])
            self.n_fit_ = int(cal.get("n_fit", 0))
            self._folded = None
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"{_source(self.profile)}: unreadable calibration ({exc})") from None
        self._state_factor = float(stored_state(self.profile).get("factor", 1.0)) if self.state else 1.0

    @property
    def state_factor_(self) -> float:
        """The device-state factor predictions are scaled by (1.0: none stored, ``state=False`` or a fresh fit)."""
        self._check_fitted()
        return self._state_factor

    # --- prediction -----------------------------------------------------------------------------------------------
    def _table(self, value: Callable[[OpSpec, float], float]) -> SlotTable:
        prof = self.profile

        def v(op: OpSpec, r: int) -> float:
            try:
                ms = prof.lookup(op.key, r).ms
            except MissingOpError:
                raise KeyError(op.key) from None  # SlotTable names the key if a subnet needs it
            return value(op, ms)
        return SlotTable(space_for_width(prof.meta.width), prof.meta.resolutions, v)

    def folded_table(self) -> SlotTable:
        """One per-op table holding each op's share of the calibrated prediction (intercept on the stem), times the
        state factor."""
        self._check_fitted()
        if getattr(self, "_folded", None) is None:
            fns = [FEATURES[f] for f in self.features_]
            s = self._state_factor
            coef, icpt = [s * float(c) for c in self.coef_], s * self.intercept_

            def value(op: OpSpec, ms: float) -> float:
                return sum(c * f(op, ms) for c, f in zip(coef, fns)) + (icpt if op.kind == STEM else 0.0)
            self._folded = self._table(value)
        return self._folded

    def predict(self, archs: Archs) -> np.ndarray:
        return _predict(self.profile, self.folded_table(), archs)
