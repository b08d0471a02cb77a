"""The wheel: built from the checkout, installed offline into a fresh venv.

The venv gets the machine's python3.11, the wheel and the runtime wheels of
`make wheelhouse` (click, GitPython, gitdb, smmap) and nothing else: pip runs
with --no-index. Every command runs outside the checkout, with no
DSV4PATCH_SERIES and no PYTHONPATH, so the series and the golden samples can
only come from the installed package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.support import cli, trees

WHEELHOUSE = trees.CACHE / "wheelhouse"
RUNTIME = ("click", "gitpython", "gitdb", "smmap")
PYPROJECT = tomllib.loads((trees.REPO / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
SERIES_VERSION = tomllib.loads(
    (trees.REPO / "patches" / "series.toml").read_text())["version"]
DIST_INFO = {"METADATA", "WHEEL", "entry_points.txt", "top_level.txt", "RECORD"}
SKIPPED_NAMES = shutil.ignore_patterns("__pycache__", "*.pyc", ".series.lock")


def _wheelhouse() -> Path:
    found = {p.name.split("-")[0].lower() for p in WHEELHOUSE.glob("*.whl")}
    missing = [name for name in RUNTIME if name not in found]
    if missing:
        pytest.fail(f"{WHEELHOUSE} lacks wheels of {', '.join(missing)}: run "
                    "`make wheelhouse` (a prerequisite of `make test`)")
    return WHEELHOUSE


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout's package sources; setuptools writes build/ into its input."""
    dest = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(trees.REPO / name, dest / name)
    for name in ("dsv4patch", "patches"):
        shutil.copytree(trees.REPO / name, dest / name, ignore=SKIPPED_NAMES)
    return dest


@pytest.fixture(scope="module")
def wheel(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "--wheel-dir", str(out), str(source)],
        capture_output=True, text=True, env=_offline_env())
    assert built.returncode == 0, built.stderr
    [path] = out.glob("*.whl")
    assert path.name == f"dsv4patch-{VERSION}-py3-none-any.whl"
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh python3.11 venv with the wheel; returns its bin directory."""
    python = shutil.which("python3.11")
    assert python, "python3.11 is needed to build the test venv"
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([python, "-m", "venv", str(venv)], check=True,
                   capture_output=True)
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-index",
         "--find-links", str(_wheelhouse()), str(wheel)],
        capture_output=True, text=True, env=_offline_env())
    assert done.returncode == 0, done.stdout + done.stderr
    return venv / "bin"


def _offline_env() -> dict[str, str]:
    """No pip configuration (it may name indexes), no checkout on the path."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "DSV4PATCH_SERIES") and not k.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def run(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=cwd,
                          capture_output=True, text=True, env=_offline_env(),
                          timeout=600)


def expected_files(source: Path) -> set[str]:
    """What the wheel must hold: the package's modules, its golden samples, the
    whole series directory, and pip's metadata."""
    files = {f"dsv4patch/{p.name}" for p in (source / "dsv4patch").glob("*.py")}
    files |= {f"dsv4patch/golden/{p.name}"
              for p in (source / "dsv4patch" / "golden").iterdir() if p.is_file()}
    files |= {f"dsv4patch/patches/{p.relative_to(source / 'patches').as_posix()}"
              for p in (source / "patches").rglob("*") if p.is_file()}
    return files | {f"dsv4patch-{VERSION}.dist-info/{name}" for name in DIST_INFO}


def test_the_wheel_holds_the_package_series_and_samples_only(
        wheel: Path, source: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    want = expected_files(source)
    assert not want - names, ("not in the wheel (list the directory under "
                              "[tool.setuptools] in pyproject.toml): "
                              f"{sorted(want - names)}")
    assert not names - want, f"unexpected in the wheel: {sorted(names - want)}"
    assert "dsv4patch/golden/prompts.json" in names
    assert "dsv4patch/target_checks.py" in names


def test_installed_version_names_the_series(installed: Path, tmp_path: Path) -> None:
    done = run(installed, tmp_path, "dsv4patch", "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"dsv4patch {VERSION} (series {SERIES_VERSION})\n"


def test_installed_data_comes_from_the_package(installed: Path, tmp_path: Path) -> None:
    probe = ("import json, dsv4patch, dsv4patch.series as s, dsv4patch.verify as v; "
             "print(json.dumps([dsv4patch.__file__, str(s.locate()), "
             "str(v.GOLDEN_DIR), str(v.CHECK_SCRIPT)]))")
    done = run(installed, tmp_path, "python", "-c", probe)
    assert done.returncode == 0, done.stderr
    site = installed.parent / "lib"
    for path in map(Path, json.loads(done.stdout)):
        assert path.is_relative_to(site), path
        assert path.exists(), path


def test_installed_check_apply_and_verify(installed: Path, tmp_path: Path) -> None:
    pair = cli.make_trees("plain", tmp_path / "trees")
    work = tmp_path / "elsewhere"
    work.mkdir()

    checked = run(installed, work, "dsv4patch", "check", *pair.args)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines()[-1] == f"series {SERIES_VERSION}: applies"

    applied = run(installed, work, "dsv4patch", "-q", "apply", *pair.args)
    assert applied.returncode == 0, applied.stderr
    # The wheel's verify, its check script and golden samples, in the project
    # venv's Python (which has vLLM's dependencies; the test venv has none).
    verified = run(installed, work, "dsv4patch", "verify", *pair.args, "--json",
                   "--python", sys.executable)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    rows = {c["name"]: c for c in json.loads(verified.stdout)["checks"]}
    assert rows["golden"]["state"] == rows["import"]["state"] == "pass"


def test_the_build_requires_a_setuptools_that_reads_the_license_string() -> None:
    # project.license as a plain SPDX string is read from setuptools 77 on; older
    # ones reject the whole pyproject.toml, so a base whose setuptools satisfies
    # a lower floor could not build the wheel.
    assert isinstance(PYPROJECT["project"]["license"], str)
    floors = [req.split(">=", 1)[1] for req in PYPROJECT["build-system"]["requires"]
              if req.startswith("setuptools>=")]
    assert floors and int(floors[0].split(".")[0]) >= 77, floors
