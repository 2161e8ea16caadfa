"""Property-based tests: every file a user hands ofakit, damaged in generated ways, is refused in one line naming
the file (exit code 2, no traceback, nothing written) or read correctly (every printed latency finite and > 0).

Each family starts from a valid file, applies one generated damage (a value replaced by NaN, infinity, 1e400, a
negative, a bool, a string, a huge integer, deep nesting or a YAML alias bomb; a key repeated with another value; a
row repeated with another value; bytes that are not UTF-8; a cut), then runs the CLI in-process (or the reader,
for files whose commands would train). Seeded (``derandomize``); ``OFAKIT_FUZZ_EXAMPLES`` scales the case count.
The per-family counts are printed (``pytest -s``)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import traceback
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ofakit.device_profiles import SHIPPED_DIR
from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.space import ArchConfig, sample_arch, space_for_width

SHARED = Path(__file__).resolve().parents[2] / "shared"
NOTE10 = SHARED / "data" / "ofa_note10_lut"
N = int(os.environ.get("OFAKIT_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=N, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
COUNTS: dict[str, Counter] = {}

# --- damage -------------------------------------------------------------------------------------------------

JSON_VALUES = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "-1", "0", "-1.5", "1e308", "9" * 5000, "true",
               "false", "null", '"abc"', '""', "[]", "{}", "[null]", "[1e13]", '{"a": 1, "a": 2}',
               "[" * 100_000 + "]" * 100_000, '"' + "x" * 200_000 + '"', "1e-320", "12345678901234567890123"]
YAML_VALUES = [".nan", ".inf", "-.inf", "1e400", "-1", "-1.0", "0", "true", "null", "~", "abc", "[]", "{}",
               "[null]", "9" * 5000, "12345678901234567890123", "*nowhere", "[" * 20_000 + "]" * 20_000,
               "'" + "x" * 200_000 + "'"]
CSV_VALUES = ["nan", "inf", "-inf", "1e400", "-1", "-0.5", "abc", "true", "9" * 5000, "x" * 200_000, "1e308",
              "\x00", '"', "1,2"]
BOMB = ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + "".join(f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")))
_SENT = "\u0001SENTINEL\u0001"


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every (dict key / list index) path in ``doc``, lists sampled at their first two items."""
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:2]):
            out += _paths(v, prefix + (i,))
    return out


def _set(doc: Any, path: tuple, value: Any) -> Any:
    doc = json.loads(json.dumps(doc))
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return doc


@st.composite
def damaged_json(draw: Callable, doc: Any, fields: list[tuple] | None = None) -> tuple[str, bytes]:
    """(what was done, file bytes) of ``doc`` damaged once."""
    paths = fields or _paths(doc)
    kind = draw(st.sampled_from(["value", "value", "value", "dup", "bytes", "cut", "bomb", "none"]))
    if kind == "none":  # a control: the valid file must be read
        return "none", json.dumps(doc).encode()
    if kind == "value":
        path, raw = draw(st.sampled_from(paths)), draw(st.sampled_from(JSON_VALUES))
        text = json.dumps(_set(doc, path, _SENT)).replace(json.dumps(_SENT), raw)
        return f"value {path[-1]}={raw[:12]}", text.encode()
    if kind == "dup":
        dicts = [p for p in paths if isinstance(_get(doc, p), dict)] + [()]
        path = draw(st.sampled_from(dicts))
        node = _get(doc, path)
        if not node:
            return "dup none", json.dumps(doc).encode() + b"\xff"
        key = draw(st.sampled_from(sorted(node)))
        other = _SENT + "K"
        d2 = _set(doc, path + (other,), "different") if path else {**doc, other: "different"}
        return f"dup {key}", json.dumps(d2).replace(json.dumps(other), json.dumps(key)).encode()
    text = json.dumps(doc).encode()
    return _bytes_damage(draw, kind, text)


def _get(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def _bytes_damage(draw: Callable, kind: str, data: bytes) -> tuple[str, bytes]:
    if kind == "bomb":
        return "bomb", BOMB.encode()
    at = draw(st.integers(0, max(len(data) - 1, 0)))
    if kind == "bytes":
        return "bytes", data[:at] + draw(st.sampled_from([b"\xff\xfe", b"\xc3", b"\x80", b"\xed\xa0\x80"])) + data[at:]
    return "cut", data[:at]


@st.composite
def damaged_yaml(draw: Callable, doc: Any) -> tuple[str, bytes]:
    paths = _paths(doc)
    kind = draw(st.sampled_from(["value", "value", "value", "dup", "bytes", "cut", "bomb", "none"]))
    if kind == "none":
        return "none", yaml.safe_dump(doc).encode()
    if kind == "value":
        path, raw = draw(st.sampled_from(paths)), draw(st.sampled_from(YAML_VALUES))
        text = yaml.safe_dump(_set(doc, path, "SENTINELVALUE"), width=10**9).replace("SENTINELVALUE", raw)
        return f"value {path[-1]}={raw[:12]}", text.encode()
    if kind == "dup":
        dicts = [p for p in paths if isinstance(_get(doc, p), dict) and _get(doc, p)] + [()]
        path = draw(st.sampled_from(dicts))
        key = draw(st.sampled_from(sorted(_get(doc, path), key=str)))
        d2 = _set(doc, path + ("SENTINELKEY",), "different") if path else {**doc, "SENTINELKEY": "different"}
        return f"dup {key}", yaml.safe_dump(d2, width=10**9).replace("SENTINELKEY", str(key)).encode()
    return _bytes_damage(draw, kind, yaml.safe_dump(doc).encode())


@st.composite
def damaged_csv(draw: Callable, text: str, columns: tuple[str, ...]) -> tuple[str, bytes]:
    lines = text.splitlines()
    kind = draw(st.sampled_from(["cell", "cell", "cell", "duprow", "extra", "header", "bytes", "cut", "none"]))
    if kind == "none":
        return "none", text.encode()
    row = draw(st.integers(1, len(lines) - 1))
    cells = lines[row].split(",")
    if kind == "cell":
        col = draw(st.sampled_from([c for c in columns if c in lines[0].split(",")]))
        cells[lines[0].split(",").index(col)] = draw(st.sampled_from(CSV_VALUES))
        lines[row] = ",".join(cells)
        return f"cell {col}", ("\n".join(lines) + "\n").encode()
    if kind == "duprow":
        i = lines[0].split(",").index(columns[-1])
        cells[i] = repr(float(cells[i] or 1) * 2 + 1)
        return "duprow", ("\n".join(lines + [",".join(cells)]) + "\n").encode()
    if kind == "extra":
        lines[row] += ",1"
        return "extra", ("\n".join(lines) + "\n").encode()
    if kind == "header":
        lines[0] = draw(st.sampled_from(["key,resolution", "key,ms,ms", "", "a,b,c", lines[0] + ",bogus"]))
        return "header", ("\n".join(lines) + "\n").encode()
    return _bytes_damage(draw, kind, ("\n".join(lines) + "\n").encode())


# --- the oracle ---------------------------------------------------------------------------------------------

def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(root.rglob("*"))}


_MS = re.compile(r"(-?(?:nan|inf|\d[\d.e+-]*)) ms")


def _judge(family: str, what: str, user_path: Path, root: Path, run: Callable[[], int | None],
           out: Path | None = None) -> None:
    """Run one case and record its outcome; fail on a traceback, a many-line or unnamed refusal, a refusal that
    wrote files, or an accepted case that printed a non-finite or non-positive latency."""
    c = COUNTS.setdefault(family, Counter())
    c["cases"] += 1
    before = _tree(root)
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = run()
    except UserError as exc:  # a library-level family: the reader's own refusal
        code, stderr = 2, io.StringIO(f"ofakit: error: {exc}\n")
    except Exception:  # noqa: BLE001 - exactly what this test hunts
        c["tracebacks"] += 1
        pytest.fail(f"{family} [{what}]: traceback\n{traceback.format_exc()}")
    err = stderr.getvalue().strip().splitlines()
    if what.endswith("none"):
        c["controls"] += 1
        assert code in (0, None), (family, "a valid file was refused", err)
    if code == 2:
        c["refused"] += 1
        assert len(err) == 1 and err[0].startswith("ofakit: error: "), (family, what, err)
        assert str(user_path) in err[0], (family, what, err[0])
        assert "Traceback" not in stderr.getvalue()
        assert _tree(root) == before, (family, what, "a refusal changed files")
        assert out is None or not out.exists(), (family, what, "a refusal wrote the output")
        return
    assert code in (0, None), (family, what, code, err)
    printed = [float(v) for v in _MS.findall(stdout.getvalue())]
    if not all(np.isfinite(v) and v > 0 for v in printed):
        c["accepted_bad"] += 1
        pytest.fail(f"{family} [{what}]: accepted and printed {printed}")
    c["accepted"] += 1


def _report(family: str) -> None:
    c = COUNTS.get(family, Counter())
    print(f"\n{family}: {c['cases']} cases, {c['refused']} refused in one line, {c['accepted']} read correctly ({c['controls']} of them "
          f"undamaged controls), "
          f"{c['tracebacks']} tracebacks, {c['accepted_bad']} accepted-bad")
    assert c["cases"] >= min(N, 10) and c["tracebacks"] == 0 and c["accepted_bad"] == 0


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Valid files of every family, made once: a small arch, the shipped profile, a saved ridge regressor."""
    from ofakit.predictors.regressors import LatencyRegressor

    base = tmp_path_factory.mktemp("valid")
    arch = sample_arch(np.random.default_rng(0), space_for_width(1.0), resolutions=[160])
    (base / "arch.json").write_text(arch.to_json())
    rng = np.random.default_rng(1)
    archs = [sample_arch(rng, space_for_width(1.0), resolutions=[160, 192]) for _ in range(12)]
    ms = [5.0 + sum(a.d) + a.r / 100 for a in archs]
    LatencyRegressor(model="ridge").fit(archs, ms).save(base / "reg")
    return {"base": base, "arch": arch, "archs": archs, "ms": ms}


def _fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("case")


def _cli(*args: str) -> Callable[[], int]:
    from ofakit.cli import main
    return lambda: main(list(args))


# --- families -----------------------------------------------------------------------------------------------

PROFILE_META = json.loads((SHIPPED_DIR / "cpu-onnxruntime-1t" / "profile.json").read_text())
META_FIELDS = [p for p in _paths(PROFILE_META) if p[0] != "environment" and not (
    len(p) > 2 and p[:2] == ("calibration", "fit_archs"))]


@FUZZ
@given(case=damaged_json(PROFILE_META, META_FIELDS), predictor=st.sampled_from(["lut", "calibrated"]))
def test_profile_json(env, tmp_path_factory, case, predictor):
    what, data = case
    root = _fresh(tmp_path_factory)
    prof = root / "prof"
    shutil.copytree(SHIPPED_DIR / "cpu-onnxruntime-1t", prof)
    (prof / "profile.json").write_bytes(data)
    _judge("profile.json", what, prof, root,
           _cli("predict", str(env["base"] / "arch.json"), "--profile", str(prof), "--predictor", predictor))


def test_profile_json_counts():
    _report("profile.json")


LUT_TEXT = (SHIPPED_DIR / "cpu-onnxruntime-1t" / "lut.csv").read_text()


@FUZZ
@given(case=damaged_csv(LUT_TEXT, ("key", "resolution", "ms", "mean_ms", "n", "rounds", "ms")))
def test_lut_csv(env, tmp_path_factory, case):
    what, data = case
    root = _fresh(tmp_path_factory)
    prof = root / "prof"
    shutil.copytree(SHIPPED_DIR / "cpu-onnxruntime-1t", prof)
    (prof / "lut.csv").write_bytes(data)
    _judge("lut.csv", what, prof, root, _cli("predict", str(env["base"] / "arch.json"), "--profile", str(prof)))


def test_lut_csv_counts():
    _report("lut.csv")


OFA_FILES = ("160_lookup_table.yaml", "224_lookup_table.yaml")
OFA_DOC = yaml.safe_load((NOTE10 / OFA_FILES[0]).read_text()) if NOTE10.is_dir() else {}


@pytest.mark.skipif(not NOTE10.is_dir(), reason="OFA's Note10 tables are not available")
@FUZZ
@given(case=damaged_yaml(OFA_DOC))
def test_ofa_yaml(tmp_path_factory, case):
    what, data = case
    root = _fresh(tmp_path_factory)
    src = root / "tables"
    src.mkdir()
    for name in OFA_FILES:
        shutil.copy(NOTE10 / name, src / name)
    (src / OFA_FILES[0]).write_bytes(data)
    out = root / "out"
    _judge("OFA YAML", what, src, root,
           _cli("profile", "import-ofa", str(src), "--name", "n10", "--width", "1.2", "--out", str(out)), out)


def test_ofa_yaml_counts():
    if NOTE10.is_dir():
        _report("OFA YAML")


INVENTORY = {"version": 1, "defaults": {"user": "pi", "threads": 1},
             "groups": {"g": {"vars": {"threads": 4}, "devices": ["a"]}},
             "devices": {"a": {"host": "127.0.0.1", "port": 2222, "tags": ["arm"]}, "b": {"host": "h"}}}


@FUZZ
@given(case=damaged_yaml(INVENTORY))
def test_inventory(tmp_path_factory, case):
    what, data = case
    root = _fresh(tmp_path_factory)
    inv = root / "devices.yaml"
    inv.write_bytes(data)
    _judge("inventory", what, inv, root, _cli("devices", "list", "--inventory", str(inv)))


def test_inventory_counts():
    _report("inventory")


def _recompute_checksum(folder: Path) -> None:
    """Re-sign a hand-edited predictor.json the way an attacker or a careless script would (SHA-256 is no guard)."""
    from ofakit.predictors.persist import _canonical, _sha256
    try:
        body = json.loads((folder / "predictor.json").read_text())
    except ValueError:
        return
    if isinstance(body, dict):
        body.pop("checksum", None)
        try:
            body["checksum"] = _sha256(_canonical(body))
        except ValueError:
            return
        (folder / "predictor.json").write_text(json.dumps(body))


@FUZZ
@given(data=st.data())
def test_saved_regressor(env, tmp_path_factory, data):
    root = _fresh(tmp_path_factory)
    reg = root / "reg"
    shutil.copytree(env["base"] / "reg", reg)
    target = data.draw(st.sampled_from(["predictor.json", "model.json"]))
    doc = json.loads((reg / target).read_text())
    if target == "predictor.json":
        fields = [p for p in _paths(doc["meta"]) if p[:1] != ("params",)]
        what, raw = data.draw(damaged_json(doc["meta"], fields))
        try:
            meta = json.loads(raw, parse_constant=float)
        except (ValueError, RecursionError):
            meta = None
        if isinstance(meta, dict):  # a parseable edit: keep the file well-formed and re-signed
            doc["meta"] = meta
            (reg / target).write_text(json.dumps(doc))
            _recompute_checksum(reg)
        else:
            (reg / target).write_bytes(raw)
    else:
        what, raw = data.draw(damaged_json(doc))
        (reg / target).write_bytes(raw)
        body = json.loads((reg / "predictor.json").read_text())
        from ofakit.predictors.persist import _sha256
        body["files"]["model.json"] = _sha256(raw)
        (reg / "predictor.json").write_text(json.dumps(body))
        _recompute_checksum(reg)
    _judge("saved regressor", f"{target} {what}", reg, root,
           _cli("predict", str(env["base"] / "arch.json"), "--predictor", str(reg)))


def test_saved_regressor_counts():
    _report("saved regressor")


ACC_META = {"encoding": "general", "hidden": [8], "y_mean": 0.7, "y_std": 0.05,
            "params": {"hidden": [8], "encoding": "general"}, "validation": None}


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    from ofakit.predictors.accuracy import AccuracyMLP
    archs = [sample_arch(np.random.default_rng(i), space_for_width(1.0), resolutions=[160]) for i in range(30)]
    acc = np.linspace(0.6, 0.8, 30)
    folder = tmp_path_factory.mktemp("mlp") / "mlp"
    AccuracyMLP(hidden=(8,), epochs=2, random_state=0).fit(archs, acc).save(folder)
    return folder, archs


@FUZZ
@given(data=st.data())
def test_accuracy_mlp(mlp, tmp_path_factory, data):
    from ofakit.predictors.accuracy import AccuracyMLP
    folder, archs = mlp
    root = _fresh(tmp_path_factory)
    dst = root / "mlp"
    shutil.copytree(folder, dst)
    doc = json.loads((dst / "predictor.json").read_text())
    fields = [p for p in _paths(doc["meta"]) if p[:1] in (("y_mean",), ("y_std",), ("hidden",), ("encoding",))]
    what, raw = data.draw(damaged_json(doc["meta"], fields))
    try:
        meta = json.loads(raw, parse_constant=float)
    except (ValueError, RecursionError):
        meta = None
    if isinstance(meta, dict):
        doc["meta"] = meta
        (dst / "predictor.json").write_text(json.dumps(doc))
        _recompute_checksum(dst)
    else:
        (dst / "predictor.json").write_bytes(raw)

    def run() -> int:
        out = AccuracyMLP.load(dst).predict(archs)
        print("\n".join(f"{v} ms" for v in out))  # judged like latencies: finite and > 0
        return 0
    _judge("accuracy MLP", what, dst, root, run)


def test_accuracy_mlp_counts():
    _report("accuracy MLP")


@FUZZ
@given(data=st.data())
def test_accuracy_records(env, tmp_path_factory, data):
    from ofakit.ofa_core.records import read_accuracy_records
    rec = {**env["arch"].to_dict(), "acc": 0.71}
    what, raw = data.draw(damaged_json(rec))
    root = _fresh(tmp_path_factory)
    path = root / "acc.jsonl"
    path.write_bytes(json.dumps({**env["archs"][0].to_dict(), "acc": 0.5}).encode() + b"\n" + raw + b"\n")

    def run() -> int:
        _, acc = read_accuracy_records(path)
        print("\n".join(f"{v} ms" for v in acc))
        return 0
    _judge("accuracy records", what, path, root, run)


def test_accuracy_records_counts():
    _report("accuracy records")


@FUZZ
@given(data=st.data(), fmt=st.sampled_from(["jsonl", "csv"]))
def test_measurements(env, tmp_path_factory, data, fmt):
    root = _fresh(tmp_path_factory)
    path = root / f"measured.{fmt}"
    if fmt == "jsonl":
        rec = {**env["arch"].to_dict(), "ms": 12.5}
        what, raw = data.draw(damaged_json(rec))
        good = b"".join(json.dumps({**a.to_dict(), "ms": m}).encode() + b"\n" for a, m in zip(env["archs"], env["ms"]))
        path.write_bytes(good + raw + b"\n")
    else:
        text = "arch,ms\n" + "".join(f"{_csv_cell(json.dumps(a.to_dict()))},{m}\n"
                                     for a, m in zip(env["archs"], env["ms"]))
        what, raw = data.draw(damaged_csv(text, ("ms",)))
        path.write_bytes(raw)
    out = root / "reg"
    _judge("measurements", what, path, root,
           _cli("fit-latency", str(path), "--out", str(out), "--model", "ridge", "--holdout", "0"), out)


def _csv_cell(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def test_measurements_counts():
    _report("measurements")


CONFIGS = Path(__file__).resolve().parents[1] / "ofa_core" / "configs"
TRAIN_CONFIG = yaml.safe_load(sorted(CONFIGS.glob("*.yaml"))[0].read_text())


@FUZZ
@given(data=st.data())
def test_training_config(tmp_path_factory, data):
    from ofakit.ofa_core.train.config import load_config
    what, raw = data.draw(damaged_yaml(TRAIN_CONFIG))
    root = _fresh(tmp_path_factory)
    path = root / "config.yaml"
    path.write_bytes(raw)

    def run() -> int:
        cfg = load_config(path)
        print("\n".join(f"{p.lr} ms" for p in cfg.phases))  # every lr finite and > 0
        return 0
    _judge("training config", what, path, root, run)


def test_training_config_counts():
    _report("training config")


@FUZZ
@given(data=st.data())
def test_arch_file(env, tmp_path_factory, data):
    what, raw = data.draw(damaged_json(env["arch"].to_dict()))
    root = _fresh(tmp_path_factory)
    path = root / "arch.json"
    path.write_bytes(raw)
    _judge("arch file", what, path, root, _cli("predict", str(path)))


def test_arch_file_counts():
    _report("arch file")


def test_documented_cases_read_correctly(tmp_path):
    """The controls: ``3e-05`` in a config is a float; a repeated key with the same value is fine."""
    from ofakit.ofa_core.strict import parse_json, parse_yaml
    assert parse_yaml("lr: 3e-05\nlr: 3e-05\n", "x.yaml") == {"lr": 3e-05}
    assert parse_json('{"a": 1, "a": 1}', "x.json") == {"a": 1}
    assert ArchConfig.from_json(json.dumps(sample_arch(np.random.default_rng(0), space_for_width(1.0)).to_dict()))
