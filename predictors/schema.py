"""What a saved predictor's files may hold: pydantic models of the parts of ``predictor.json`` and its JSON data
files that reach a prediction. The files are parsed strictly first (:mod:`ofakit.ofa_core.strict`: no NaN, no infinity, no
repeated keys); these models add the shapes and ranges. Each loader checks its metadata with one call of
:func:`ofakit.ofa_core.strict.validated` before building the predictor."""
from __future__ import annotations

from typing import Annotated, Any, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ofakit.device_profiles.schema import Ms, Name, Resolution

Finite = Annotated[float, Field(allow_inf_nan=False, ge=-1e15, le=1e15)]
Width = Annotated[float, Field(gt=0, le=4, allow_inf_nan=False)]
LutRow = Annotated[tuple[Name, Optional[Resolution], Ms],
                   BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v)]  # a JSON [key, r, ms]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class _ProfileRef(_Strict):
    name: Name
    width: Width
    resolutions: list[Resolution] = Field(min_length=1)


class RegressorMeta(_Strict):
    """``predictor.json`` meta of a latency regressor."""

    width: Width
    n_train: Annotated[int, Field(ge=1)]
    profile: Optional[_ProfileRef]
    feature_names: list[str] = Field(min_length=1)
    compiled_kind: str
    params: dict[str, Any]


class _Linear(_Strict):
    mean: list[Finite]
    scale: list[Annotated[float, Field(gt=0, le=1e15, allow_inf_nan=False)]]
    coef: list[Finite]
    intercept: Finite


class _Trees(_Strict):
    base: Finite
    scale: Annotated[float, Field(gt=0, le=1e15, allow_inf_nan=False)]
    combine: str
    trees: list[dict[str, list[Finite]]] = Field(min_length=1)


class RegressorModel(_Strict):
    """``model.json`` of a latency regressor: the compiled model and the profile's LUT rows."""

    compiled: dict[str, Any]
    lut_rows: Optional[list[LutRow]]


COMPILED_SCHEMAS: dict[str, type[BaseModel]] = {"linear": _Linear, "trees": _Trees}


class _Candidate(_Strict):
    refs: list[Annotated[int, Field(ge=0)]]
    pcs: Annotated[int, Field(ge=0)]
    arch: list[str]


class FewShotMeta(_Strict):
    """``predictor.json`` meta of a few-shot predictor."""

    width: Width
    reference_names: list[Name]
    candidates: list[_Candidate] = Field(min_length=1)
    coefs: list[list[Finite]]
    loo_rmse: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]]
    n_train: Annotated[int, Field(ge=1)]
    params: dict[str, Any]
    pca: Optional[dict[str, list[Any]]] = None


class FewShotReference(_Strict):
    """One reference LUT embedded in ``references.json``."""

    type: str
    name: Name
    width: Width
    resolutions: list[Resolution] = Field(min_length=1)
    rows: list[LutRow]


class AccuracyMeta(_Strict):
    """``predictor.json`` meta of an accuracy MLP: outputs are ``y_mean + y_std * net(x)``, top-1 as a fraction."""

    encoding: str
    hidden: list[Annotated[int, Field(ge=1, le=65536)]] = Field(min_length=1, max_length=64)
    y_mean: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    y_std: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    params: dict[str, Any]
    validation: Optional[dict[str, Any]] = None
    width: Optional[Annotated[float, Field(gt=0, le=4, allow_inf_nan=False)]] = None
