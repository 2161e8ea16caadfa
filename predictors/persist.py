"""Saving fitted predictors without pickle: a folder with ``predictor.json`` plus optional data files.

``predictor.json`` holds the format name, the predictor kind, a format version, the predictor's own metadata,
the SHA-256 of every data file beside it and a checksum of its own content. Loading checks all of them, so a
file of another version, a hand-edited or truncated file, or a weights file swapped for another is rejected
with one line (:class:`~ofakit.ofa_core.errors.UserError`) instead of half-working. Data files are torch state dicts
(loaded with ``weights_only=True``) or JSON; nothing is unpickled.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ofakit.ofa_core.fileio import atomic_write_bytes, atomic_write_text, staged_folder
from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.strict import decode, load_json, parse_json, validated

META_FILE = "predictor.json"
FORMAT = "ofakit-predictor"


class PredictorFileError(UserError):
    """A saved predictor that is missing, corrupt, tampered with or of another version."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def save_bundle(folder: str | os.PathLike, kind: str, version: int, meta: dict[str, Any],
                files: dict[str, bytes] | None = None, schema: Any = None) -> Path:
    """Write ``files`` and ``predictor.json`` into ``folder``, whole or not at all (staged beside it). What would be
    refused on loading (``meta`` failing ``schema``, a JSON data file with NaN) is refused before writing."""
    folder = Path(folder)
    if folder.suffix == ".json":
        raise UserError(f"{folder}: give a folder to save the predictor into, not a .json file")
    files = files or {}
    if schema is not None:
        validated(schema, json.loads(json.dumps(meta)), folder / META_FILE, UserError)  # as it will be read
    body = {"format": FORMAT, "kind": kind, "version": version, "meta": meta,
            "files": {name: _sha256(data) for name, data in files.items()}}
    try:
        body["checksum"] = _sha256(_canonical(body))
        for name, data in files.items():
            if name.endswith(".json"):
                parse_json(data.decode("utf-8"), folder / name)
    except (ValueError, UserError) as exc:  # NaN or inf in the parameters
        raise UserError(f"{folder}: cannot save a predictor with non-finite parameters ({exc})") from None
    with staged_folder(folder, last=META_FILE) as tmp:
        for name, data in files.items():
            atomic_write_bytes(tmp / name, data)
        atomic_write_text(tmp / META_FILE, json.dumps(body, indent=1, sort_keys=True) + "\n")
    return folder


def resolve_bundle(path: str | os.PathLike) -> Path:
    """The folder of a saved predictor given the folder or its ``predictor.json``."""
    p = Path(path)
    if p.name == META_FILE and p.is_file():
        return p.parent
    if (p / META_FILE).is_file():
        return p
    raise PredictorFileError(f"{p}: no saved predictor here (expected a folder with {META_FILE})")


def load_bundle(path: str | os.PathLike, kind: str, version: int) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Read and verify a saved predictor of ``kind``; returns (its metadata, its data files' bytes)."""
    folder = resolve_bundle(path)
    meta_path = folder / META_FILE
    body = load_json(meta_path, "predictor metadata", PredictorFileError)
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise PredictorFileError(f"{meta_path}: not an ofakit predictor file")
    if body.get("kind") != kind:
        raise PredictorFileError(f"{meta_path}: holds a {body.get('kind')!r} predictor, expected {kind!r}")
    if body.get("version") != version:
        raise PredictorFileError(f"{meta_path}: {kind} predictor format version {body.get('version')!r}, this "
                                 f"ofakit reads version {version}")
    claimed = body.pop("checksum", None)
    try:
        actual = _sha256(_canonical(body))
    except ValueError:
        actual = None
    if claimed != actual or not isinstance(body.get("meta"), dict) or not isinstance(body.get("files"), dict):
        raise PredictorFileError(f"{meta_path}: checksum mismatch, the file was modified or is damaged")
    blobs = {}
    for name, digest in body["files"].items():
        if Path(name).name != name:
            raise PredictorFileError(f"{meta_path}: bad data file name {name!r}")
        try:
            data = (folder / name).read_bytes()
        except OSError as exc:
            raise PredictorFileError(f"{folder / name}: cannot read predictor data ({exc.strerror})") from None
        if _sha256(data) != digest:
            raise PredictorFileError(f"{folder / name}: checksum mismatch, the file was modified or is damaged")
        blobs[name] = data
    return body["meta"], blobs


def bundle_json(path: str | os.PathLike, blobs: dict[str, bytes], name: str, what: str) -> Any:
    """The data file ``name`` of a loaded bundle parsed strictly as JSON (errors name the file)."""
    where = resolve_bundle(path) / name
    if name not in blobs:
        raise PredictorFileError(f"{where}: missing from the saved predictor")
    return parse_json(decode(blobs[name], where, what), where, what)


def checked_meta(path: str | os.PathLike, meta: dict[str, Any], schema: Any) -> dict[str, Any]:
    """A loaded bundle's metadata checked against the pydantic ``schema`` (errors name ``predictor.json``)."""
    return validated(schema, meta, resolve_bundle(path) / META_FILE, PredictorFileError)
