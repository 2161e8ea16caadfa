"""Where profiles live: shipped ones are read-only, everything ofakit writes goes to the user's data folder."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import ofakit.device_profiles as device_profiles
from ofakit.device_profiles import DEFAULT_PROFILE, load_profile, store
from ofakit.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared"
LUT_DIR = SHARED / "data" / "ofa_note10_lut"
PACKAGE = Path(device_profiles.__file__).resolve().parent


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (caches aside) with its SHA-256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh HOME with neither XDG_DATA_HOME nor OFAKIT_PROFILE_DIR set."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("OFAKIT_PROFILE_DIR", raising=False)
    return tmp_path / "home"


def test_user_dir_rule(home, tmp_path, monkeypatch):
    assert store.user_dir() == home / ".local" / "share" / "ofakit" / "profiles"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert store.user_dir() == tmp_path / "xdg" / "ofakit" / "profiles"
    monkeypatch.setenv("OFAKIT_PROFILE_DIR", str(tmp_path / "mine"))
    assert store.user_dir() == tmp_path / "mine"


@pytest.mark.parametrize("name", ["", ".", "..", "/", "a/b", "../x", "/tmp/x", " x", "-x"])
def test_names_that_are_paths_are_refused(home, capsys, name):
    assert main(["profile", "import-ofa", str(LUT_DIR), "--name", name, "--width", "1.2"]) == 2
    err = capsys.readouterr().err
    assert "is not a profile name" in err and err.count("\n") == 1
    assert not (home / ".local").exists()


def test_profile_name_is_checked_before_measuring(home, cli):
    r = cli("profile", "cpu", "--quick", "--name", "../escape")
    assert r.returncode == 2 and "is not a profile name" in r.stderr


def test_writers_never_touch_the_package(home, capsys):
    before = tree_digest(PACKAGE)
    user = store.user_dir()
    # import-ofa with a shipped profile's name: lands in the user's folder and shadows the shipped one
    assert main(["profile", "import-ofa", str(LUT_DIR), "--name", DEFAULT_PROFILE, "--width", "1.2"]) == 0
    assert (user / DEFAULT_PROFILE / "profile.json").is_file()
    capsys.readouterr()
    assert load_profile(DEFAULT_PROFILE).meta.source.startswith("ofa-import")
    assert load_profile(DEFAULT_PROFILE).path == user / DEFAULT_PROFILE
    err = capsys.readouterr().err
    assert err.count("shadows the shipped profile") == 1  # once per process, not per load
    (user / DEFAULT_PROFILE / "profile.json").unlink()
    # a shipped profile changed in place (what recalibrate / validate --record do) is copied to the user's folder
    shipped = load_profile(DEFAULT_PROFILE)
    assert store.is_shipped(shipped.path)
    shipped.meta.calibration = {**shipped.meta.calibration, "state": {"factor": 1.01}}
    assert shipped.save_meta() == user / DEFAULT_PROFILE
    copy = load_profile(DEFAULT_PROFILE)
    assert copy.path == user / DEFAULT_PROFILE and copy.meta.calibration["state"] == {"factor": 1.01}
    assert len(copy) == len(shipped)
    with pytest.raises(device_profiles.ProfileError, match="read-only"):
        shipped.save(PACKAGE / "x")
    # saved predictors are found by name like profiles
    rows = [{"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": r, "ms": 1.0 + r / 100} for r in range(128, 228, 8)]
    data = home / "m.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["fit-few-shot", str(data), "--name", "my-board", "--reference", DEFAULT_PROFILE]) == 0
    assert (user / "my-board" / "predictor.json").is_file()
    arch = home / "a.json"
    arch.write_text(json.dumps({k: rows[0][k] for k in ("ks", "e", "d", "r")}))
    capsys.readouterr()
    assert main(["predict", str(arch), "--predictor", "my-board"]) == 0
    assert "ms" in capsys.readouterr().out
    assert tree_digest(PACKAGE) == before
