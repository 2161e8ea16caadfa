"""Fixtures shared by several test files."""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from emulated_boards import NOT_ROOT, Boards

_BOARDS = pytest.StashKey[Boards]()


def pytest_collection_modifyitems(items: list) -> None:
    """Emulated-board tests run last (their boards start at the end of collection and build meanwhile)."""
    items.sort(key=lambda item: item.get_closest_marker("board") is not None)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the boards (as root) when a selected test needs them: after -k/-m deselection, so that a session
    without board tests never touches a board that another session may be using."""
    wanted = any(item.get_closest_marker("board") for item in session.items)
    if wanted and os.geteuid() == 0 and not session.config.option.collectonly:
        session.config.stash[_BOARDS] = Boards()
        session.config.stash[_BOARDS].start_all()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the boards whatever happened to their tests."""
    boards = session.config.stash.get(_BOARDS, None)
    if boards is not None:
        boards.stop_all()


@pytest.fixture(scope="session")
def boards(request: pytest.FixtureRequest) -> Boards:
    """Both emulated boards (tests/emulated_boards.py), started at collection."""
    found = request.config.stash.get(_BOARDS, None)
    if found is None:
        pytest.skip(NOT_ROOT)
    return found


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
