"""The Makefile's set-up stamps: a clone reuses a cache that another clone of the
same state built (as .ci/run on a clean clone does), and rebuilds the venv only
when what it is built from changes; run with `make -n`, so nothing is installed.
And `make wheel` in a copy of the checkout, which packs only what is there now."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from tests.support import trees

INPUTS = ("Makefile", "pyproject.toml", "tools/constraints.txt")


def _clone(where: Path) -> Path:
    """The files the set-up rules read, freshly written as a clone writes them."""
    for rel in INPUTS:
        (where / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(trees.REPO / rel, where / rel)
        later = time.time() + 60
        os.utime(where / rel, (later, later))
    return where


def _plan(clone: Path, cache: Path, target: str) -> list[str]:
    done = subprocess.run(["make", "-n", "-C", str(clone), target],
                          env={**os.environ, "DSV4PATCH_CACHE": str(cache)},
                          capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def _build(clone: Path, cache: Path, target: str) -> None:
    """Pretend the planned commands ran: create what they would touch."""
    for line in _plan(clone, cache, target):
        if line.startswith("touch "):
            stamp = Path(line.split(None, 1)[1].strip("'"))
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.touch()


def _installs(plan: list[str]) -> list[str]:
    return [line for line in plan if " install " in line or " -m venv " in line]


def test_a_second_clone_reuses_the_venv_and_image(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = _clone(tmp_path / "first")
    assert _installs(_plan(first, cache, "image"))
    _build(first, cache, "image")
    assert not _installs(_plan(first, cache, "image"))

    second = _clone(tmp_path / "second")

    assert not _installs(_plan(second, cache, "image"))


def test_changed_constraints_rebuild_the_venv(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = _clone(tmp_path / "first")
    _build(first, cache, "venv")
    second = _clone(tmp_path / "second")
    with (second / "tools" / "constraints.txt").open("a") as handle:
        handle.write("# another pin\n")

    assert _installs(_plan(second, cache, "venv"))


def test_make_wheel_leaves_out_what_an_earlier_build_left(tmp_path: Path) -> None:
    # setuptools packs whatever build/lib holds: a module or patch dropped from
    # the checkout since the last build would still ship.
    clone = _clone(tmp_path / "clone")
    shutil.copy(trees.REPO / "README.md", clone / "README.md")
    for package in ("dsv4patch", "patches"):
        shutil.copytree(trees.REPO / package, clone / package,
                        ignore=shutil.ignore_patterns("__pycache__", ".*"))
    stale = clone / "build" / "lib" / "dsv4patch" / "patches" / "0099-dropped.patch"
    stale.parent.mkdir(parents=True)
    stale.write_text("dropped from the series\n")
    log = clone / "build" / "ci-images" / "v0.13.0rc3.log"
    log.parent.mkdir(parents=True)
    log.write_text("make ci-images keeps its logs beside the build\n")
    if _installs(_plan(clone, trees.CACHE, "wheel")):
        pytest.fail(f"the venv in {trees.CACHE} is not set up: run `make venv`")

    subprocess.run(["make", "-C", str(clone), "wheel"], check=True, capture_output=True,
                   env={**os.environ, "DSV4PATCH_CACHE": str(trees.CACHE)})

    [wheel] = (clone / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert not [n for n in archive.namelist() if "0099-dropped" in n]
    assert log.exists()
