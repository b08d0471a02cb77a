"""Fixtures shared by the CLI test modules.

Each is registered under its `name=`, so a module imports the function and its
tests ask for the short name (no shadowing of the imported one).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import cli


@pytest.fixture(name="full_series", scope="session")
def fixture_full_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A series directory: the real patches plus the two synthetic ones."""
    entries, sources = cli.extended_entries()
    return cli.write_series(tmp_path_factory.mktemp("series"), entries, sources)


@pytest.fixture(name="lock_dir")
def fixture_lock_dir(tmp_path: Path) -> Path:
    """A private lock directory, so parallel test runs never meet."""
    return tmp_path / "locks"
