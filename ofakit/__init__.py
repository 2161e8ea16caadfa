"""ofakit: Once-for-All for many devices. Everything public is importable from here::

    from ofakit import load_profile, create_predictor, sample_archs, search

Names are imported on first use (module ``__getattr__``), so ``import ofakit`` and the command line do not pay
for torch, scikit-learn or pandas until something needs them.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, tuple[str, ...]] = {
    "ofakit.device_profiles": ("DEFAULT_PROFILE", "Profile", "ProfileError", "list_profiles", "load_profile"),
    "ofakit.ofa_core.errors": ("UserError",),
    "ofakit.ofa_core.space": ("ArchBatch", "ArchConfig", "load_arch", "space_for_width"),
    "ofakit.ofa_core.search": ("Constraint", "EvolutionSearch", "SearchConfig", "SearchResult", "flops_constraint",
                        "params_constraint", "sweep"),
    "ofakit.predictors.lut": ("CalibratedLUTPredictor", "LUTPredictor"),
    "ofakit.predictors.regressors": ("LatencyRegressor",),
    "ofakit.predictors.fewshot": ("FewShotPredictor", "fit_few_shot"),
    "ofakit.predictors.accuracy": ("AccuracyMLP", "load_accuracy_frame", "load_accuracy_jsonl", "load_accuracy_predictor"),
    "ofakit.predictors.registry": ("create_predictor", "default_predictor", "list_predictors", "register_predictor"),
    "ofakit.predictors.constraints": ("build_constraints", "latency_constraint"),
    "ofakit.profiler.backends": ("Backend", "get_backend", "list_backends", "register_backend"),
    "ofakit.profiler.devices": ("RemoteSettings", "Runner", "Target", "resolve"),
    "ofakit.profiler.pipeline": ("ProfileRequest",),
    "ofakit.workflows": ("find_profile", "few_shot", "make_job", "profile", "profile_devices", "recalibrate"),
    "ofakit.validation": ("ValidationReport", "validate_profile"),
    "ofakit.api": ("LatencyColumn", "ProfileComparison", "compare_profiles", "front_frame", "latency_columns",
                   "sample_archs", "search", "write_front"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'ofakit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
