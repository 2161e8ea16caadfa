"""scikit-learn's estimator contract without importing scikit-learn (1-3 s: scipy.stats, pandas).

:class:`Estimator` gives ``get_params`` / ``set_params`` from the ``__init__`` signature and ``score`` (R^2),
exactly what :class:`sklearn.base.BaseEstimator` and ``RegressorMixin`` give, so ``sklearn.base.clone`` and
grid searches work on it; predictors on the search path (which must start fast) derive from it.
"""
from __future__ import annotations

import inspect
from typing import Any

import numpy as np


class Estimator:
    """Parameters are the ``__init__`` arguments, stored unchanged as attributes of the same name."""

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values() if p.name != "self" and p.kind == p.POSITIONAL_OR_KEYWORD)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> "Estimator":
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__} (valid: {sorted(valid)})")
            setattr(self, name, value)
        return self

    def score(self, X: Any, y: Any) -> float:
        """R^2 of ``self.predict(X)`` against ``y``."""
        y = np.asarray(y, dtype=np.float64).ravel()
        resid = y - np.asarray(self.predict(X), dtype=np.float64).ravel()  # type: ignore[attr-defined]
        total = ((y - y.mean()) ** 2).sum()
        return float(1.0 - (resid ** 2).sum() / total) if total > 0 else 0.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"
