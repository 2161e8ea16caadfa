"""How well a latency predictor matches measured subnets: one definition for validation, regressors and few-shot."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LatencyMetrics:
    """Relative-error figures (fractions) and Spearman's rho over the ``n`` subnets with a positive, finite
    measurement and a finite prediction; NaN where undefined (no subnets; rho with < 3 or constant values)."""

    spearman: float
    mape: float
    within5: float
    within10: float
    rmse: float
    mean_err: float
    n: int

    def percent(self) -> dict[str, float]:
        """The figures validation tables print: shares and errors in percent, plus ``spearman`` and ``n``."""
        return {"within5": 100 * self.within5, "within10": 100 * self.within10, "rmse_pct": 100 * self.rmse,
                "mean_err_pct": 100 * self.mean_err, "spearman": self.spearman, "n": self.n}

    def __str__(self) -> str:
        return (f"n={self.n}  {rank_text('Spearman', self.spearman, self.n)}  MAPE={100 * self.mape:.2f}%  "
                f"within 5%={100 * self.within5:.1f}%  within 10%={100 * self.within10:.1f}%")


def rank_text(name: str, value: float, n: int) -> str:
    """``Spearman=0.9876``, or words saying why a rank correlation is undefined instead of ``nan``."""
    if np.isfinite(value):
        return f"{name}={value:.4f}"
    return f"{name} n/a (too few subnets to rank: {n}; needs at least 3 with different values)"


def latency_metrics(measured: np.ndarray, predicted: np.ndarray) -> LatencyMetrics:
    """Compare predicted with measured milliseconds (relative error = predicted / measured - 1)."""
    from scipy.stats import spearmanr

    m, p = np.asarray(measured, dtype=float), np.asarray(predicted, dtype=float)
    ok = np.isfinite(m) & np.isfinite(p) & (m > 0)
    err = p[ok] / m[ok] - 1
    if err.size == 0:
        nan = float("nan")
        return LatencyMetrics(nan, nan, nan, nan, nan, nan, 0)
    ranked = err.size > 2 and np.ptp(m[ok]) > 0 and np.ptp(p[ok]) > 0
    rho = float(spearmanr(m[ok], p[ok]).statistic) if ranked else float("nan")
    rel = np.abs(err)
    return LatencyMetrics(rho, float(rel.mean()), float(np.mean(rel <= 0.05)), float(np.mean(rel <= 0.10)),
                          float(np.sqrt(np.mean(err ** 2))), float(err.mean()), int(err.size))
