"""Short entry points of the Python API (``from ofakit import sample_archs, search``): a sample of subnets for a
device profile, and one search over the constraints :func:`ofakit.predictors.constraints.build_constraints` makes."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

if TYPE_CHECKING:
    import pandas as pd

    from ofakit.device_profiles import Profile
    from ofakit.ofa_core.search import SearchResult
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
