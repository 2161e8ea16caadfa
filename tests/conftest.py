"""Fixtures shared by several test files."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: on a shared 2-core machine spinning OpenMP threads make small models ~10x
    slower. Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model/journal cache folder for one test module (``OFAKIT_CACHE_DIR`` of the ``cli`` fixture)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, cache: Path):
    """Run the ofakit CLI in-process with the module's cache; returns (returncode, stdout, stderr)."""
    from ofakit.cli import main

    monkeypatch.setenv("OFAKIT_CACHE_DIR", str(cache))

    def run(*args: str) -> SimpleNamespace:
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)
    return run


@pytest.fixture(autouse=True, scope="session")
def user_data_home(tmp_path_factory: pytest.TempPathFactory):
    """Every test writes user profiles into a temp data folder, never into the package or the real home."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
        mp.delenv("OFAKIT_PROFILE_DIR", raising=False)
        yield
