"""Short entry points of the Python API (``from ofakit import sample_archs, search``): a sample of subnets for a
device profile, latency columns over profiles (what ``ofakit predict`` prints), and one search over the
constraints :func:`ofakit.predictors.constraints.build_constraints` makes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from ofakit.device_profiles import Profile
    from ofakit.ofa_core.search import Constraint, SearchResult
    from ofakit.ofa_core.space import ArchBatch


def sample_archs(n: int, profile: "Profile | str | None" = None, *, width: Optional[float] = None,
                 resolutions: Optional[Sequence[int]] = None, seed: int = 0) -> "ArchBatch":
    """``n`` random subnets (OFA's sampler, seeded): of ``profile``'s width and resolutions when given, else of
    ``width`` (default 1.0) at the space's resolutions."""
    import numpy as np

    from ofakit.device_profiles import load_profile
    from ofakit.ofa_core.space import sample_batch, space_for_width

    prof = load_profile(profile) if isinstance(profile, str) else profile
    if prof is not None:
        width = prof.meta.width if width is None else width
        resolutions = prof.meta.resolutions if resolutions is None else resolutions
    return sample_batch(np.random.default_rng(seed), n, space_for_width(1.0 if width is None else width),
                        resolutions)


@dataclass(frozen=True)
class LatencyColumn:
    """A latency predictor on a profile (or a self-contained saved predictor), with where its numbers come from."""

    title: str
    profile: Optional[str]
    kind: str
    source: str
    predictor: Any
    width: float

    def predict(self, records: Sequence[tuple[str, dict]], width: Optional[float] = None) -> list[float]:
        """Predicted ms of every (label, OFA arch dict) (archs without a width take ``width``, else the column's)."""
        from ofakit.ofa_core.errors import ArchError, UserError
        from ofakit.ofa_core.space import ArchBatch, ArchConfig

        configs = []
        for label, d in records:
            try:
                configs.append(ArchConfig.from_ofa_dict(d, width, self.width))
            except ArchError as exc:
                raise UserError(f"{label}: {exc}") from None
        by_width: dict[float, list[int]] = {}
        for i, c in enumerate(configs):
            by_width.setdefault(c.width, []).append(i)
        ms = [0.0] * len(configs)
        for idx in by_width.values():
            for i, v in zip(idx, self.predictor.predict(ArchBatch.from_configs([configs[i] for i in idx]))):
                ms[i] = float(v)
        return ms


def latency_columns(profiles: Sequence[str] = (), predictor: Optional[str] = None) -> list[LatencyColumn]:
    """One latency column per profile (default: the default profile, this CPU's) with ``predictor`` (default: each
    profile's :func:`~ofakit.predictors.registry.default_predictor`), or one for a saved predictor."""
    from ofakit.device_profiles import DEFAULT_PROFILE, load_profile
    from ofakit.ofa_core.errors import ParameterError
    from ofakit.predictors.registry import create_predictor, default_predictor, list_predictors

    if predictor is not None and predictor not in list_predictors(saved=False):
        pred = create_predictor(predictor)
        if profiles:
            raise ParameterError("profile", "a saved predictor carries its own device data; leave the profile out")
        return [LatencyColumn(predictor, None, predictor, f"saved predictor {predictor}", pred,
                              float(getattr(pred, "width_", 1.0)))]
    cols = []
    for name in profiles or [DEFAULT_PROFILE]:
        prof = load_profile(name)
        kind = predictor or default_predictor(prof)
        cols.append(LatencyColumn(prof.name, prof.name, kind, f"profile {prof.name} ({prof.path}), predictor {kind}",
                                  create_predictor(kind, prof), prof.meta.width))
    return cols


def search(accuracy: Any, profiles: "Sequence[str] | str" = (), latency: "Sequence[float] | float" = (), *,
           flops: Optional[float] = None, params: Optional[float] = None, predictor: Optional[str] = None,
           saved: Sequence[str] = (), resolutions: Optional[Sequence[int]] = None, seed: int = 0,
           **config: Any) -> "SearchResult":
    """The most accurate subnet (``accuracy.predict``) whose predicted latency on each profile (one bound each,
    ms) and FLOPs/parameters (millions) stay within bounds. ``predictor``: the latency predictor of every profile
    (default: calibrated where the profile has a calibration, else lut); ``saved``: saved predictor folders, each a
    device with its own bound after the profiles'; ``config``: :class:`~ofakit.ofa_core.search.SearchConfig` fields."""
    from threadpoolctl import threadpool_limits

    from ofakit.ofa_core.search import EvolutionSearch, SearchConfig
    from ofakit.predictors.constraints import OFA_RESOLUTIONS, build_constraints

    profiles = [profiles] if isinstance(profiles, str) else list(profiles)
    latency = [latency] if isinstance(latency, (int, float)) else list(latency)
    res = tuple(resolutions or OFA_RESOLUTIONS)
    constraints, width = build_constraints(profiles, latency, flops, params, config.pop("width", None), res,
                                           predictor=predictor, saved=saved,
                                           accuracy_width=getattr(accuracy, "width_", None))
    with threadpool_limits(1):  # the predictors' small matrix products run fastest on one BLAS thread
        return EvolutionSearch(accuracy, constraints, SearchConfig(resolutions=res, width=width, **config)).run(seed)


def front_frame(results: Sequence["SearchResult"], bounds: Sequence[float]) -> "pd.DataFrame":
    """A swept front (:func:`ofakit.ofa_core.search.sweep`) as a table: one row per bound with the accuracy, every
    constraint's value, the search's cost and the subnet (arch JSON)."""
    import pandas as pd

    return pd.DataFrame([{"bound": b, "accuracy": r.accuracy, **r.values, "evaluations": r.evaluations,
                          "seconds": r.seconds, "arch": r.arch.to_json()} for b, r in zip(bounds, results)])


def write_front(results: Sequence["SearchResult"], bounds: Sequence[float], constraints: Sequence["Constraint"],
                out: Path) -> tuple[Path, Path]:
    """A swept front as CSV ``out`` (one row per bound, with the subnet) and a PNG plot beside it, both or
    neither."""
    import csv
    import io
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ofakit.ofa_core.fileio import atomic_write_text, staged_folder

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    names = [c.name for c in constraints]
    w.writerow(["bound", "accuracy", *names, "evaluations", "seconds", "arch"])
    for b, r in zip(bounds, results):
        w.writerow([b, f"{r.accuracy:.6f}", *(f"{r.values[n]:.6g}" for n in names), r.evaluations,
                    f"{r.seconds:.3f}", json.dumps(r.arch.to_dict(), separators=(",", ":"))])
    png = out.with_suffix(".png")
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    acc = [100 * r.accuracy for r in results]
    got = [r.values[names[0]] for r in results]
    ax.step(bounds, acc, where="post", color="tab:blue", label="best accuracy within budget")
    ax.plot(got, acc, "o", color="tab:orange", label="subnet found (its latency)")
    ax.set_xlabel(f"{names[0]} budget ({constraints[0].unit})")
    ax.set_ylabel("predicted top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with staged_folder(out.parent, last=out.name) as tmp:  # both files or neither
        fig.savefig(tmp / png.name)
        atomic_write_text(tmp / out.name, buf.getvalue())
    plt.close(fig)
    return out, png


@dataclass(frozen=True)
class ProfileComparison:
    """The same random subnets predicted on two profiles (each with its default predictor)."""

    a: str
    b: str
    kinds: tuple[str, str]
    width: float
    resolutions: list[int]
    archs: "ArchBatch"
    ms_a: "np.ndarray"
    ms_b: "np.ndarray"

    @property
    def ratio(self) -> "np.ndarray":
        """Latency on ``b`` over latency on ``a``, per subnet."""
        return self.ms_b / self.ms_a

    @property
    def spearman(self) -> float:
        """Rank agreement of the two profiles over the subnets (1: the same order)."""
        from scipy.stats import spearmanr

        return float(spearmanr(self.ms_a, self.ms_b).statistic)

    def to_frame(self) -> "pd.DataFrame":
        """One row per subnet: its arch (JSON), ms on each profile and the ratio."""
        import pandas as pd

        return pd.DataFrame({"arch": [c.to_json() for c in self.archs.to_configs()], f"ms[{self.a}]": self.ms_a,
                             f"ms[{self.b}]": self.ms_b, "ratio": self.ratio})


def compare_profiles(a: "Profile | str", b: "Profile | str", n: int = 1000, seed: int = 0) -> ProfileComparison:
    """Predict ``n`` random subnets (seeded) at the resolutions both profiles share, on both."""
    from ofakit.device_profiles import load_profile
    from ofakit.ofa_core.errors import UserError
    from ofakit.predictors.registry import create_predictor, default_predictor

    pa, pb = (load_profile(p) if isinstance(p, str) else p for p in (a, b))
    if pa.meta.width != pb.meta.width:
        raise UserError(f"profiles {pa.name!r} (width {pa.meta.width}) and {pb.name!r} (width {pb.meta.width}) "
                        f"describe different supernets; compare profiles of one width")
    res = sorted(set(pa.meta.resolutions) & set(pb.meta.resolutions))
    if not res:
        raise UserError(f"profiles {pa.name!r} and {pb.name!r} share no resolution")
    archs = sample_archs(n, width=pa.meta.width, resolutions=res, seed=seed)
    kinds = (default_predictor(pa), default_predictor(pb))
    ms_a, ms_b = (create_predictor(k, p).predict(archs) for k, p in zip(kinds, (pa, pb)))
    return ProfileComparison(pa.name, pb.name, kinds, pa.meta.width, res, archs, ms_a, ms_b)
