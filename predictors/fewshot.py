"""Few-shot latency prediction for a new device from a handful of measured subnets and known devices.

The latency of a subnet on a new device is modelled in log space as a small linear function of what is already
known about that subnet: its latency on *reference* devices (any latency predictors: LUT sums of known profiles,
learned regressors, tables of measured subnets) and arch features that capture launch-bound execution (number
of kernels) and compute (MACs). Ten samples cannot fit many coefficients, so :class:`FewShotPredictor` scores a
short list of candidate families - kernel count alone, kernels + MACs, the first k principal components of the
references (computed on a basis population, so the references' shared structure comes from the known devices,
not from the ten samples) with or without kernel count, and "the best single reference" - by *nested*
leave-one-out (the choice inside a family is repeated without each held-out sample, so a family of many
candidates pays for its chance to fit noise). Every fit uses a Huber loss (one slow measurement among ten must
not tilt it). The prediction is the geometric mean of the ``n_ensemble`` best families.

On HELP's GPUs (bench/fewshot_help.py, BENCHMARKS.md) this lifts the README baseline from mean Spearman 0.843 /
79.8% within +-10% to about 0.905 / 85%. With 4,000 samples of the target instead of 10, the best of ridge,
gradient boosting and a random forest on the other configs + arch features + the block encoding reaches 0.925 /
90.3% (``bench/fewshot_help.py --ceiling``): what they miss on the batch-1 configs and 2080ti_32 is measurement
noise (not shared by similar subnets; on titan_rtx_1 mostly slow/fast states along the measurement order), so
no few-shot method can reach mean Spearman 0.95 on this data.

:func:`fit_few_shot` builds one from device profiles (``ofakit fit-few-shot``).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from ofakit.device_profiles import OpStats, Profile, ProfileMeta, load_profile
from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.space import ArchBatch, as_batch, sample_batch, space_for_width
from ofakit.ofa_core.strict import validated

from .base import Archs, Predictor, checked
from .features import ARCH_FEATURES, arch_features, measured_latencies
from .lut import LUTPredictor
from .persist import PredictorFileError, bundle_json, checked_meta, load_bundle, resolve_bundle, save_bundle
from .registry import not_fitted, register_predictor
from .schema import FewShotMeta, FewShotReference

KIND, VERSION = "few-shot", 1


@dataclass(frozen=True)
class Candidate:
    """One small model: which columns of the design it uses. ``refs`` index reference devices, ``pcs`` is the
    number of leading principal components, ``arch`` names arch features (log-transformed)."""

    refs: tuple[int, ...] = ()
    pcs: int = 0
    arch: tuple[str, ...] = ()

    def describe(self, names: Sequence[str]) -> str:
        parts = [names[i] for i in self.refs] + ([f"{self.pcs} PCs of references"] if self.pcs else [])
        return " + ".join(parts + list(self.arch)) or "constant"


class TableReference:
    """A reference device known only on a fixed set of measured subnets (e.g. a public benchmark)."""

    def __init__(self, archs: ArchBatch, ms: np.ndarray, name: str = "table"):
        self.name = name
        self.width = archs.width
        keys = _arch_keys(archs)
        order = np.argsort(keys)
        self._keys, self._ms = keys[order], np.asarray(ms, float)[order]

    def predict(self, archs: Archs) -> np.ndarray:
        b = as_batch(archs)
        if b.width != self.width:
            raise UserError(f"reference {self.name!r} holds width-{self.width} subnets, got width {b.width}")
        keys = _arch_keys(b)
        pos = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        if np.any(self._keys[pos] != keys):
            raise UserError(f"reference {self.name!r} has no measurement of a requested subnet")
        return self._ms[pos]


def _arch_keys(b: ArchBatch) -> np.ndarray:
    """One fixed-size byte string per subnet (its canonical genes), as a numpy void array."""
    c = b.canonical()
    rows = np.ascontiguousarray(np.column_stack([c.ks, c.e, c.d, c.r]).astype(np.int16))
    return rows.view(np.dtype((np.void, rows.shape[1] * rows.itemsize))).ravel()


def _huber_fit(x: np.ndarray, y: np.ndarray, delta: float, ridge: float, weights: np.ndarray | None = None,
               iters: int = 20) -> np.ndarray:
    """Coefficients (last = intercept) minimising a Huber loss by iteratively reweighted least squares.

    ``weights`` (F, n) fits F problems at once on the same samples (0 drops a sample: leave-one-out folds);
    returns (F, p + 1), or (p + 1,) when ``weights`` is None.
    """
    xc = np.column_stack([x, np.ones(len(y))])
    base = np.ones((1, len(y))) if weights is None else weights
    reg = ridge * np.eye(xc.shape[1])
    reg[-1, -1] = 0.0
    w = base.copy()
    for _ in range(iters):
        a = np.einsum("fn,np,nq->fpq", w, xc, xc) + reg
        beta = np.linalg.solve(a, np.einsum("fn,np,n->fp", w, xc, y)[..., None])[..., 0]
        r = np.abs(y[None, :] - beta @ xc.T)
        new_w = base * np.where(r <= delta, 1.0, delta / np.maximum(r, 1e-12))
        if np.allclose(new_w, w):
            break
        w = new_w
    return beta if weights is not None else beta[0]


def _loo_error(x: np.ndarray, y: np.ndarray, delta: float, ridge: float, cap: float) -> float:
    """Leave-one-out squared error in log space, each error capped at ``cap`` (an outlier sample costs the
    same for every candidate instead of deciding the choice)."""
    n = len(y)
    beta = _huber_fit(x, y, delta, ridge, weights=1.0 - np.eye(n))
    pred = np.einsum("np,np->n", np.column_stack([x, np.ones(n)]), beta)
    return float(np.mean(np.minimum(np.abs(pred - y), cap) ** 2))


def _nested_loo_error(designs: Sequence[np.ndarray], y: np.ndarray, delta: float, ridge: float,
                      cap: float) -> float:
    """Leave-one-out error of "pick the design with the lowest leave-one-out error, then fit it": the choice is
    repeated without each held-out sample, so a family of many designs pays for its chance to overfit."""
    if len(designs) == 1:
        return _loo_error(designs[0], y, delta, ridge, cap)
    n = len(y)
    idx = np.arange(n)
    weights = np.ones((n, n, n))
    weights[idx, :, idx] = 0.0  # fold (i, j) drops sample i ...
    weights[:, idx, idx] = 0.0  # ... and sample j; fold (i, i) drops only i
    weights = weights.reshape(n * n, n)
    inner = np.empty((len(designs), n))
    outer = np.empty((len(designs), n))
    off_diag = ~np.eye(n, dtype=bool)
    for c, x in enumerate(designs):
        beta = _huber_fit(x, y, delta, ridge, weights=weights).reshape(n, n, -1)
        pred = np.einsum("ijp,jp->ij", beta, np.column_stack([x, np.ones(n)]))  # fold (i, j) predicts j
        err = np.minimum(np.abs(pred - y[None, :]), cap) ** 2
        inner[c] = (err * off_diag).sum(axis=1) / (n - 1)
        outer[c] = np.diagonal(pred)
    chosen = outer[inner.argmin(axis=0), idx]
    return float(np.mean(np.minimum(np.abs(chosen - y), cap) ** 2))


@register_predictor(KIND, saved=True)
class FewShotPredictor(RegressorMixin, BaseEstimator):
    """Latency (ms) on a new device from ``references`` (name -> latency predictor) and a few measured subnets.

    ``basis``: subnets on which the references' principal components are computed (default: ``n_basis``
    random subnets of the training width). ``delta``: Huber threshold in log space (0.05 = 5%).
    """

    def __init__(self, references: Mapping[str, Predictor] | None = None, basis: ArchBatch | None = None,
                 n_basis: int = 2000, max_pcs: int = 3, delta: float = 0.05, ridge: float = 1e-3,
                 loo_cap: float = 0.15, n_ensemble: int = 3, random_state: int = 0):
        self.references = references
        self.basis = basis
        self.n_basis = n_basis
        self.max_pcs = max_pcs
        self.delta = delta
        self.ridge = ridge
        self.loo_cap = loo_cap
        self.n_ensemble = n_ensemble
        self.random_state = random_state

    # --- design ----------------------------------------------------------------------------
    def _ref_logs(self, b: ArchBatch) -> np.ndarray:
        cols = [np.asarray(self.references_[n].predict(b), float) for n in self.reference_names_]
        out = np.log(np.column_stack(cols)) if cols else np.zeros((len(b), 0))
        if not np.all(np.isfinite(out)):
            raise UserError("a reference predictor returned a non-positive latency")
        return out

    def _design(self, cand: Candidate, refs: np.ndarray, feats: np.ndarray) -> np.ndarray:
        cols = [refs[:, list(cand.refs)]]
        if cand.pcs:
            cols.append(((refs - self.pca_mean_) / self.pca_scale_) @ self.pca_components_[:cand.pcs].T)
        cols += [np.log(feats[:, [ARCH_FEATURES.index(a)]]) for a in cand.arch]
        return np.column_stack(cols) if cols else np.zeros((len(refs), 0))

    def _families(self) -> list[list[Candidate]]:
        """Candidate families: fixed small models, and "the best single reference" (chosen inside the family)."""
        m = len(self.reference_names_)
        out = [[Candidate(arch=("n_kernels",))], [Candidate(arch=("n_kernels", "macs_m"))]]
        for k in range(1, min(self.max_pcs, m) + 1):
            out += [[Candidate(pcs=k)], [Candidate(pcs=k, arch=("n_kernels",))]]
        if m:
            out.append([Candidate(refs=(j,), arch=a) for j in range(m) for a in ((), ("n_kernels",))])
        return out

    # --- fit / predict ---------------------------------------------------------------------
    def fit(self, archs: Archs, ms: np.ndarray) -> "FewShotPredictor":
        """Choose and fit the candidate with the lowest leave-one-out error on the measured subnets."""
        b, y = measured_latencies(archs, ms, 4, "few-shot: need at least {min_n} measured subnets, got {n}")
        self.references_ = dict(self.references or {})
        self.reference_names_ = tuple(self.references_)
        self.width_ = b.width
        if self.reference_names_:
            basis = self.basis if self.basis is not None else sample_batch(
                np.random.default_rng(self.random_state), self.n_basis, space_for_width(b.width),
                resolutions=np.unique(b.r))
            rb = self._ref_logs(basis)
            self.pca_mean_, self.pca_scale_ = rb.mean(axis=0), rb.std(axis=0)
            self.pca_scale_[self.pca_scale_ == 0] = 1.0
            _, _, vt = np.linalg.svd((rb - self.pca_mean_) / self.pca_scale_, full_matrices=False)
            self.pca_components_ = vt
        refs, feats, ly = self._ref_logs(b), arch_features(b), np.log(y)
        args = (self.delta, self.ridge, self.loo_cap)
        scored = []
        for fam in self._families():
            fam = [c for c in fam if len(c.refs) + c.pcs + len(c.arch) + 2 <= len(y)]
            if not fam:
                continue
            designs = [self._design(c, refs, feats) for c in fam]
            # the family's error includes choosing inside it: nested leave-one-out
            err = _nested_loo_error(designs, ly, *args)
            pick = int(np.argmin([_loo_error(x, ly, *args) for x in designs])) if len(fam) > 1 else 0
            scored.append((err, len(scored), fam[pick]))
        best = sorted(scored)[:max(1, int(self.n_ensemble))]
        self.candidates_ = [c for _, _, c in best]
        self.loo_rmse_ = [float(np.sqrt(e)) for e, _, _ in best]
        self.coefs_ = [_huber_fit(self._design(c, refs, feats), ly, self.delta, self.ridge)
                       for c in self.candidates_]
        self.n_train_ = len(y)
        return self

    def predict(self, archs: Archs) -> np.ndarray:
        """Predicted latency (ms): the geometric mean of the chosen candidates' predictions."""
        if not hasattr(self, "coefs_"):
            raise not_fitted("few-shot predictor: not fitted")
        b = as_batch(archs)
        if b.width != self.width_:
            raise UserError(f"width: this predictor was fitted on width {self.width_}, got {b.width}")
        refs, feats = self._ref_logs(b), arch_features(b)
        logs = [np.column_stack([self._design(c, refs, feats), np.ones(len(b))]) @ coef
                for c, coef in zip(self.candidates_, self.coefs_)]
        return checked(np.exp(np.mean(logs, axis=0)), getattr(self, "source_", "few-shot predictor"))

    @property
    def description(self) -> str:
        """The chosen candidates, e.g. ``titan_rtx_64 + n_kernels | 2 PCs of references``."""
        return " | ".join(c.describe(self.reference_names_) for c in self.candidates_)

    # --- persistence -----------------------------------------------------------------------
    def save(self, folder: str | os.PathLike) -> Path:
        """Write the chosen models, the PCA basis and every reference (embedded) as JSON."""
        if not hasattr(self, "coefs_"):
            raise not_fitted("few-shot predictor: not fitted, nothing to save")
        refs = {n: _reference_to_json(n, self.references_[n]) for n in self.reference_names_}
        meta = {"width": self.width_, "reference_names": list(self.reference_names_),
                "candidates": [asdict(c) for c in self.candidates_], "coefs": [c.tolist() for c in self.coefs_],
                "loo_rmse": self.loo_rmse_, "n_train": self.n_train_, "description": self.description,
                "params": {k: v for k, v in self.get_params().items() if k not in ("references", "basis")}}
        if self.reference_names_:
            meta["pca"] = {"mean": self.pca_mean_.tolist(), "scale": self.pca_scale_.tolist(),
                           "components": self.pca_components_.tolist()}
        return save_bundle(folder, KIND, VERSION, meta, {"references.json": json.dumps(refs).encode()},
                           FewShotMeta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FewShotPredictor":
        """Load a predictor saved by :meth:`save`; tampered or other-version files raise one-line errors."""
        meta, blobs = load_bundle(path, KIND, VERSION)
        checked_meta(path, meta, FewShotMeta)
        refs = bundle_json(path, blobs, "references.json", "few-shot references")
        if not isinstance(refs, dict):
            raise PredictorFileError(f"{resolve_bundle(path) / 'references.json'}: expected an object of references")
        for n, ref in refs.items():
            validated(FewShotReference, ref, f"{resolve_bundle(path) / 'references.json'}: {n}", PredictorFileError)
        try:
            names = tuple(meta["reference_names"])
            model = cls(references={n: _reference_from_json(refs[n]) for n in names}, **meta["params"])
            model.references_ = dict(model.references)
            model.reference_names_ = names
            model.width_ = float(meta["width"])
            model.source_ = str(resolve_bundle(path))
            model.candidates_ = [Candidate(tuple(c["refs"]), int(c["pcs"]), tuple(c["arch"]))
                                 for c in meta["candidates"]]
            model.coefs_ = [np.asarray(c, dtype=np.float64) for c in meta["coefs"]]
            model.loo_rmse_ = [float(v) for v in meta["loo_rmse"]]
            model.n_train_ = int(meta["n_train"])
            if names:
                model.pca_mean_, model.pca_scale_, model.pca_components_ = (
                    np.asarray(meta["pca"][k], dtype=np.float64) for k in ("mean", "scale", "components"))
                if model.pca_components_.shape != (len(names), len(names)):
                    raise ValueError("PCA basis does not match the references")
            if not model.candidates_ or len(model.coefs_) != len(model.candidates_):
                raise ValueError("no model")
            for c, coef in zip(model.candidates_, model.coefs_):
                if (coef.shape != (len(c.refs) + c.pcs + len(c.arch) + 1,) or any(r >= len(names) for r in c.refs)
                        or c.pcs > len(names) or any(a not in ARCH_FEATURES for a in c.arch)):
                    raise ValueError("model does not match its references")
        except (KeyError, TypeError, ValueError, UserError) as exc:
            raise PredictorFileError(f"{path}: corrupt few-shot predictor ({exc})") from None
        return model


# --- references as JSON (a saved few-shot predictor is self-contained) -------------------------------------

def _reference_to_json(name: str, ref: Predictor) -> dict[str, Any]:
    if isinstance(ref, LUTPredictor):
        p = ref.profile
        return {"type": "lut", "name": p.name, "width": p.meta.width, "resolutions": list(p.meta.resolutions),
                "rows": [[s.key, s.resolution, s.ms] for s in p]}
    raise UserError(f"reference {name!r}: only LUT references can be saved with a few-shot predictor "
                    f"(got {type(ref).__name__})")


def _reference_from_json(d: Mapping[str, Any]) -> Predictor:
    if d.get("type") != "lut":
        raise ValueError(f"unknown reference type {d.get('type')!r}")
    meta = ProfileMeta(name=d["name"], width=d["width"], resolutions=list(d["resolutions"]))
    return LUTPredictor(Profile(meta, [OpStats(key=k, resolution=r, ms=float(v)) for k, r, v in d["rows"]]))


def fit_few_shot(archs: Archs, ms: np.ndarray, references: Sequence[str | Profile] | None = None,
                 **params: Any) -> FewShotPredictor:
    """Fit a :class:`FewShotPredictor` for a new device from its measured subnets (``archs``, ``ms``) and the
    LUTs of known device profiles (names, folders or loaded profiles; default: every known profile whose
    width and resolutions cover ``archs``). Used by ``ofakit profile DEVICE --few-shot N``."""
    from ofakit.device_profiles import list_profiles

    b = as_batch(archs)
    if references is None:
        profiles = [load_profile(n) for n in list_profiles()]
    else:
        profiles = [load_profile(p) if not isinstance(p, Profile) else p for p in references]
    usable: dict[str, Predictor] = {}
    for p in profiles:
        try:
            if p.meta.width != b.width:
                raise UserError(f"reference profile {p.name!r} is for width {p.meta.width}, the subnets have "
                                f"width {b.width}")
            lut = LUTPredictor(p)
            lut.predict(b)  # raises when the table lacks a resolution or an operator these subnets use
        except UserError:
            if references is not None:
                raise
            continue
        usable[p.name] = lut
    return FewShotPredictor(references=usable, **params).fit(b, ms)
