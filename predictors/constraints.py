"""Search constraints from device profiles and saved predictors: a latency bound per device, FLOPs, parameters.

A profile's latency constraint uses :func:`ofakit.predictors.registry.default_predictor` (or the named one) together
with its per-op table (exact minimum, fast evaluation); a saved predictor folder (fit-latency, few-shot) is a
device of its own and has no table (the search then finds the smallest value by evaluating small configs).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from ofakit.ofa_core.errors import ParameterError, UserError

from .registry import create_predictor, default_predictor

if TYPE_CHECKING:
    from ofakit.device_profiles import Profile
    from ofakit.ofa_core.search import Constraint

OFA_RESOLUTIONS = (160, 176, 192, 208, 224)


def latency_constraint(profile: "str | Profile", bound: float, predictor: Optional[str] = None
                       ) -> tuple["Constraint", "Profile"]:
    """A latency constraint on a device profile with ``predictor`` (a registered name; default: the calibrated
    predictor when the profile has a calibration, else the plain LUT sum) and its per-op table."""
    from ofakit.device_profiles import load_profile
    from ofakit.ofa_core.search import Constraint

    prof = load_profile(profile) if isinstance(profile, str) else profile
    kind = predictor or default_predictor(prof)
    pred = create_predictor(kind, prof)
    table = pred.folded_table() if hasattr(pred, "folded_table") else prof.table()
    return Constraint(f"latency[{prof.name}]", pred, float(bound), "ms", table,
                      f"profile {prof.path}, predictor {kind}"), prof


def saved_latency_constraint(folder: str, bound: float) -> tuple["Constraint", float]:
    """A latency constraint from a saved predictor folder (it carries its own device data) and its width."""
    from pathlib import Path

    from ofakit.ofa_core.search import Constraint

    pred = create_predictor(folder)
    return (Constraint(f"latency[{Path(folder).name}]", pred, float(bound), "ms", source=f"saved predictor {folder}"),
            float(getattr(pred, "width_", 1.0)))


def build_constraints(profiles: Sequence[str] = (), latencies: Sequence[float] = (), flops: Optional[float] = None,
                      params: Optional[float] = None, width: Optional[float] = None,
                      resolutions: Sequence[int] = OFA_RESOLUTIONS, sweep: bool = False,
                      predictor: Optional[str] = None, saved: Sequence[str] = (),
                      accuracy_width: Optional[float] = None) -> tuple[list["Constraint"], float]:
    """Constraints in order (latency per profile, then per saved predictor folder, then FLOPs and parameters) and
    the width they imply. ``latencies``: one bound per profile and saved predictor in that order; with ``sweep``
    the first one's bound is swept, so it gets none. ``predictor``: the registered predictor every profile uses
    (default: each profile's :func:`~ofakit.predictors.registry.default_predictor`). ``accuracy_width``: the width the
    accuracy predictor describes (the width when no device nor ``width`` names one; another one is refused)."""
    from ofakit.ofa_core.search import flops_constraint, params_constraint

    sources: list[tuple[str, bool]] = [(p, False) for p in profiles] + [(f, True) for f in saved]
    need = len(sources) - 1 if sweep else len(sources)
    if sweep and not sources:
        raise ParameterError("sweep", "needs a device profile or saved predictor (the first one's latency is "
                                      "swept)")
    if len(latencies) != need:
        what = "device after the first" if sweep else "device"
        raise ParameterError("latency", f"give one bound per {what} (profile or saved predictor) in order "
                                        f"({need} expected, got {len(latencies)})")
    for v, name in [(v, "latency") for v in latencies] + [(flops, "flops"), (params, "params")]:
        if v is not None and not v > 0:
            raise ParameterError(name, f"must be > 0, got {v}")
    constraints, widths = [], set()
    bounds = ([float("inf")] if sweep else []) + list(latencies)
    for (name, is_saved), bound in zip(sources, bounds):
        if is_saved:
            c, w = saved_latency_constraint(name, bound)
            constraints.append(c)
            widths.add(w)
            continue
        c, prof = latency_constraint(name, bound, predictor)
        constraints.append(c)
        widths.add(prof.meta.width)
        missing = [r for r in resolutions if r not in prof.meta.resolutions]
        if missing:
            raise ParameterError("resolutions", f"{missing[0]} is not in profile {prof.name!r} "
                                                f"({prof.meta.resolutions[0]}..{prof.meta.resolutions[-1]})")
    if len(widths) > 1:
        raise ParameterError("profile", f"the devices describe different widths ({sorted(widths)}); one search is "
                                        f"over one supernet, so give devices of one width")
    if widths:
        w = widths.pop()
        if width is not None and abs(width - w) > 1e-9:
            raise ParameterError("width", f"{width} differs from the devices' width {w}")
    else:
        w = (accuracy_width or 1.0) if width is None else width
    if accuracy_width is not None and abs(accuracy_width - w) > 1e-9:
        what = f"profile {sources[0][0]!r}" if sources else "the width asked for"
        raise ParameterError("accuracy_predictor", f"it predicts the width-{accuracy_width:g} supernet, {what} "
                                                   f"describes width {w:g}; use a predictor fitted on width-{w:g} "
                                                   f"subnets")
    if flops is not None:
        constraints.append(flops_constraint(flops, w, resolutions))
    if params is not None:
        constraints.append(params_constraint(params, w, resolutions))
    if not constraints:
        raise UserError("no constraint: give a device profile with a latency bound, a FLOPs or a parameter bound")
    return constraints, w
