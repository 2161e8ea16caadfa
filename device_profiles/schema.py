"""What a device profile's files may hold: pydantic models of ``profile.json`` (with its calibration) and of one
``lut.csv`` row, checked on reading and before writing. Every number that can reach a prediction is finite and in
range; errors are one line naming the file (and the CSV line or JSON field)."""
from __future__ import annotations

from typing import Annotated, Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from ofakit.ofa_core.space import DEFAULT_RESOLUTIONS

MAX_MS = 1e7  # one operator or subnet taking longer than ~3 hours is a damaged file, not a measurement
Ms = Annotated[float, Field(ge=0, le=MAX_MS, allow_inf_nan=False)]
PositiveMs = Annotated[float, Field(gt=0, le=MAX_MS, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False, ge=-1e12, le=1e12)]
Count = Annotated[int, Field(ge=0, le=10**12)]
Resolution = Annotated[int, Field(ge=16, le=4096)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class _Strict(BaseModel):
    """Numbers must be numbers (no ``true`` for 1, no ``"1"`` for 1); ints are accepted where floats are."""

    model_config = ConfigDict(strict=True, extra="allow")


class StateSchema(_Strict):
    factor: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)]


class CalibrationSchema(_Strict):
    model: str
    features: list[str] = Field(min_length=1)
    coef: list[Finite]
    intercept: Finite
    n_fit: Count = 0
    fit_archs: list[Union[str, dict[str, Any]]] = []
    fit_measured_ms: list[PositiveMs] = []
    state: Optional[StateSchema] = None

    @field_validator("coef")
    @classmethod
    def _lut_coef_positive(cls, coef: list[float], info: Any) -> list[float]:
        feats = info.data.get("features") or []
        if len(coef) != len(feats):
            raise ValueError(f"{len(coef)} coefficients for {len(feats)} features")
        if "lut_ms" in feats and not coef[feats.index("lut_ms")] > 0:
            raise ValueError("the lut_ms coefficient must be > 0 (latency grows with the table sum)")
        return coef


class ProfileMetaSchema(_Strict):
    """``profile.json``; unknown keys are ignored (a newer ofakit may add some)."""

    name: Name
    device: str = ""
    backend: str = ""
    width: Annotated[float, Field(gt=0, le=4, allow_inf_nan=False)] = 1.0
    resolutions: list[Resolution] = Field(default_factory=lambda: list(DEFAULT_RESOLUTIONS), min_length=1,
                                         max_length=256)
    batch: Annotated[int, Field(ge=1, le=65536)] = 1
    threads: Optional[Annotated[int, Field(ge=1, le=4096)]] = None
    mode: str = ""
    source: str = ""
    created: str = ""
    ofakit_version: str = ""
    environment: dict[str, Any] = {}
    method: dict[str, Any] = {}
    calibration: dict[str, Any] = {}
    validation: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    schema_version: int

    @field_validator("resolutions")
    @classmethod
    def _distinct(cls, rs: list[int]) -> list[int]:
        if len(set(rs)) != len(rs):
            raise ValueError("a resolution is listed twice")
        return rs

    @field_validator("calibration")
    @classmethod
    def _calibration(cls, cal: dict[str, Any]) -> dict[str, Any]:
        if cal:
            CalibrationSchema.model_validate(cal)
        return cal


class LutRowSchema(_Strict):
    """One ``lut.csv`` row, cells as text (empty cells None): numbers are parsed from the text (``"1.5"``, not
    ``"true"``), so this model is not strict."""

    model_config = ConfigDict(strict=False, extra="forbid")

    key: Name
    resolution: Optional[Resolution] = None
    ms: Ms
    median_ms: Optional[Ms] = None
    mean_ms: Optional[Ms] = None
    std_ms: Optional[Ms] = None
    iqr_ms: Optional[Ms] = None
    min_ms: Optional[Ms] = None
    cv: Optional[Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)]] = None
    n: Optional[Count] = None
    rounds: Optional[Count] = None


class OfaEntrySchema(_Strict):
    """One entry of OFA's ``<R>_lookup_table.yaml``: ``{count, mean, std}`` in milliseconds."""

    model_config = ConfigDict(strict=True, extra="forbid")

    count: Count
    mean: Ms
    std: Ms
