"""Device profiles: per-device latency lookup tables stored as plain, diffable files.

A profile is a folder ``<name>/`` holding ``profile.json`` (metadata, schema version) and ``lut.csv`` (one row
per operator). Rows are keyed by OFA's operator key and a resolution; a row whose resolution is empty applies
at every resolution (our profiler measures each distinct op once), while OFA's tables key some ops per
resolution (their Conv_2/Logits rows differ between files). Files are written atomically; nothing is pickled.

Profiles are looked up by name in the user's profile folder and then in the profiles shipped with ofakit, or by
an explicit path to a profile folder; shipped profiles are never written to (:mod:`ofakit.device_profiles.store`).
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.fileio import atomic_write_text, staged_folder  # atomic_write_text: re-exported for profile writers
from ofakit.ofa_core.ops import MissingOpError, OpSpec, SlotTable
from ofakit.ofa_core.space import DEFAULT_RESOLUTIONS, space_for_width
from ofakit.ofa_core.strict import csv_header, csv_rows, load_json, read_text, validated

from .schema import LutRowSchema, ProfileMetaSchema

if TYPE_CHECKING:
    import pandas as pd

from . import store
from .store import SHIPPED_DIR  # noqa: F401 - re-exported

SCHEMA_VERSION = 1
PROFILE_JSON, LUT_CSV = "profile.json", "lut.csv"
DEFAULT_PROFILE = "cpu-onnxruntime-1t"
LUT_COLUMNS = ("key", "resolution", "ms", "median_ms", "mean_ms", "std_ms", "iqr_ms", "min_ms", "cv", "n", "rounds")


class ProfileError(UserError):
    """A profile that is missing, corrupt or of another schema version."""


@dataclass
class OpStats:
    """Latency statistics of one operator (milliseconds). ``ms`` is the value predictions use."""

    key: str
    ms: float
    resolution: int | None = None
    median_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    iqr_ms: float | None = None
    min_ms: float | None = None
    cv: float | None = None
    n: int | None = None
    rounds: int | None = None


@dataclass
class ProfileMeta:
    """What a profile describes: device, runtime, execution mode, how it was measured."""

    name: str
    device: str = ""
    backend: str = ""
    width: float = 1.0
    resolutions: list[int] = field(default_factory=lambda: list(DEFAULT_RESOLUTIONS))
    batch: int = 1
    threads: int | None = None
    mode: str = ""
    source: str = "measured"
    created: str = ""
    ofakit_version: str = ""
    environment: dict[str, Any] = field(default_factory=dict)
    method: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION


class Profile:
    """A loaded device profile: metadata plus a LUT of :class:`OpStats`."""

    def __init__(self, meta: ProfileMeta, entries: Iterable[OpStats] = (), path: Path | None = None):
        self.meta = meta
        self.path = path
        self._rows: dict[tuple[str, int | None], OpStats] = {}
        self._table: SlotTable | None = None
        for e in entries:
            self.add(e)

    @property
    def name(self) -> str:
        return self.meta.name

    def add(self, stats: OpStats) -> None:
        """Insert or replace one row (a re-measured op replaces its old row, never duplicates it)."""
        self._rows[(stats.key, stats.resolution)] = stats
        self._table = None

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[OpStats]:
        return iter(sorted(self._rows.values(), key=lambda s: (s.resolution or 0, s.key)))

    def __contains__(self, key: str) -> bool:
        return (key, None) in self._rows or any(k == key for k, _ in self._rows)

    def lookup(self, key: str, resolution: int | None = None) -> OpStats:
        """The row for ``key`` at ``resolution`` (exact, else resolution-free); :class:`MissingOpError` if none."""
        row = self._rows.get((key, resolution)) or self._rows.get((key, None))
        if row is None:
            raise MissingOpError(f"operator missing from profile {self.name!r}: {key}")
        return row

    def table(self) -> SlotTable:
        """Vectorized per-slot latency table over the profile's resolutions (built once, then cached)."""
        if self._table is None:
            def value(op: OpSpec, r: int) -> float:
                try:
                    return self.lookup(op.key, r).ms
                except MissingOpError:
                    raise KeyError(op.key) from None
            self._table = SlotTable(space_for_width(self.meta.width), self.meta.resolutions, value)
        return self._table

    def to_frame(self) -> "pd.DataFrame":
        """The LUT as a pandas DataFrame (one row per op and resolution, the columns of ``lut.csv``), with the
        metadata (``profile.json``'s fields) in ``.attrs``. Files on disk stay CSV/JSON."""
        import pandas as pd

        df = pd.DataFrame([[getattr(s, c) for c in LUT_COLUMNS] for s in self], columns=list(LUT_COLUMNS))
        df.attrs.update(asdict(self.meta))
        return df

    # --- persistence ---------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Write ``profile.json`` and ``lut.csv`` into ``folder`` as one staged folder (default: its own folder, or
        the user's profile folder for a new or shipped profile). Returns the folder."""
        own = self.path if self.path is not None and not store.is_shipped(self.path) else None
        target = Path(folder) if folder is not None else (own or store.write_folder(self.name))
        if store.is_shipped(target):
            raise ProfileError(f"{target}: shipped profiles are read-only; save under another folder or name")
        self.check(target)
        with staged_folder(target, last=PROFILE_JSON) as tmp:
            atomic_write_text(tmp / LUT_CSV, self.lut_csv_text())
            atomic_write_text(tmp / PROFILE_JSON, self._meta_text())
        self.path = target
        return target

    def save_meta(self) -> Path:
        """Rewrite only ``profile.json`` (atomically) in the profile's own folder, e.g. after a recalibration;
        the lookup table is left as it is; a shipped profile is copied whole to the user's folder instead.
        Returns the folder."""
        if self.path is None:
            raise ProfileError(f"profile {self.name!r} has no folder yet; save() it first")
        if store.is_shipped(self.path):
            return self.save()
        _checked_meta(asdict(self.meta), self.path / PROFILE_JSON)
        atomic_write_text(self.path / PROFILE_JSON, self._meta_text())
        return self.path

    def _meta_text(self) -> str:
        return json.dumps(asdict(self.meta), indent=2, sort_keys=True) + "\n"

    def check(self, where: str | os.PathLike) -> None:
        """Refuse to write a profile ofakit would refuse to read (a non-finite or negative latency, a bad
        calibration); errors name ``where``."""
        _checked_meta(asdict(self.meta), Path(where) / PROFILE_JSON)
        for s in self:
            validated(LutRowSchema, asdict(s), f"{Path(where) / LUT_CSV}: {s.key}", ProfileError)

    def lut_csv_text(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(LUT_COLUMNS)
        for s in self:
            w.writerow([_fmt(getattr(s, c)) for c in LUT_COLUMNS])
        return buf.getvalue()


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def profile_root() -> Path:
    """Where new profiles are written: the user's profile folder (:func:`ofakit.device_profiles.store.user_dir`)."""
    return store.user_dir()


def list_profiles() -> list[str]:
    """Names of every profile found on the search path (a user profile shadows a shipped one of its name)."""
    return [n for n, dirs in store.entries().items() if (dirs[0] / PROFILE_JSON).is_file()]


def resolve_profile_path(name_or_path: str | os.PathLike) -> Path:
    """Folder of a profile given by name or path; :class:`ProfileError` when there is none."""
    p = Path(name_or_path)
    if (p / PROFILE_JSON).is_file():
        return p
    if p.name == PROFILE_JSON and p.is_file():
        return p.parent
    found = store.find(str(name_or_path))
    if found is not None:
        return found
    known = ", ".join(list_profiles()) or "none"
    raise ProfileError(f"no device profile {str(name_or_path)!r} (known: {known})")


def load_profile(name_or_path: str | os.PathLike = DEFAULT_PROFILE) -> Profile:
    """Load a profile by name (search path) or folder path. Errors are :class:`ProfileError` with one line."""
    folder = resolve_profile_path(name_or_path)
    raw = load_json(folder / PROFILE_JSON, "profile metadata", ProfileError)
    if not isinstance(raw, dict):
        raise ProfileError(f"{folder / PROFILE_JSON}: corrupt profile metadata (not a JSON object)")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ProfileError(f"{folder / PROFILE_JSON}: schema version {version!r}, this ofakit reads "
                           f"{SCHEMA_VERSION}")
    meta = _checked_meta(raw, folder / PROFILE_JSON)
    return Profile(meta, _read_lut(folder / LUT_CSV), folder)


def _checked_meta(raw: dict[str, Any], where: Path) -> ProfileMeta:
    """``profile.json``'s content checked against :class:`~ofakit.device_profiles.schema.ProfileMetaSchema`."""
    checked = validated(ProfileMetaSchema, raw, where, ProfileError)
    try:
        space_for_width(checked["width"])
    except UserError as exc:
        raise ProfileError(f"{where}: width: {exc}") from None
    return ProfileMeta(**{f.name: checked[f.name] for f in fields(ProfileMeta) if f.name in raw})  # else defaults


def _read_lut(path: Path) -> list[OpStats]:
    text = read_text(path, "lookup table")
    header = csv_header(text, path)
    if not {"key", "ms"} <= set(header) or not set(header) <= set(LUT_COLUMNS) or len(set(header)) != len(header):
        raise ProfileError(f"{path}: corrupt lookup table (header must name key and ms, each column once, from "
                           f"{', '.join(LUT_COLUMNS)})")
    rows: dict[tuple[str, int | None], OpStats] = {}
    for line, row in csv_rows(text, path):
        where = f"{path}:{line}"
        cells = {c: (None if v == "" else v) for c, v in row.items()}
        try:
            OpSpec.from_key(cells["key"] or "")
        except UserError as exc:
            raise ProfileError(f"{where}: corrupt lookup table row ({exc})") from None
        s = OpStats(**validated(LutRowSchema, cells, where, ProfileError))
        if rows.setdefault((s.key, s.resolution), s) != s:
            raise ProfileError(f"{where}: {s.key} at resolution {s.resolution} is listed twice with different values")
    return list(rows.values())
