"""apply / revert on the real pristine trees, in the three tree shapes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import cli
from tests.support.cli import SHAPES
from tests.support.fixtures import fixture_full_series, fixture_lock_dir  # noqa: F401


def _refused(result: subprocess.CompletedProcess[str], words: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    # Progress lines may precede it; the failure itself is the last two lines.
    assert [line for line in lines if line.startswith("Error: ")] == [lines[-2]]
    assert words in lines[-2], result.stderr
    assert lines[-1].startswith("hint: "), result.stderr


@pytest.mark.parametrize("shape", SHAPES)
def test_apply_then_revert_restores_pristine(shape: str, tmp_path: Path,
                                             full_series: Path, lock_dir: Path) -> None:
    trees = cli.make_trees(shape, tmp_path)
    pristine = trees.digests()

    applied = cli.run("apply", *trees.args, series=full_series, lock_dir=lock_dir)
    assert applied.returncode == 0, applied.stderr
    assert trees.digests() != pristine
    assert (trees.vllm / "vllm/dsv4patch_test/marker.py").read_text() == "MARK = 1\n"
    if shape == "git-clone":
        # The journal directory ignores itself; only the patched files show.
        porcelain = cli.git(trees.vllm, "status", "--porcelain")
        assert ".dsv4patch" not in porcelain and "dsv4patch_test/" in porcelain

    again = cli.run("apply", "--json", *trees.args, series=full_series,
                    lock_dir=lock_dir)
    assert again.returncode == 0 and json.loads(again.stdout)["state"] == \
        "already applied"

    reverted = cli.run("revert", *trees.args, series=full_series, lock_dir=lock_dir)
    assert reverted.returncode == 0, reverted.stderr
    assert trees.digests() == pristine
    if shape == "git-clone":
        assert cli.git(trees.vllm, "status", "--porcelain") == ""


def test_real_series_round_trip_in_the_image_layout(tmp_path: Path,
                                                     lock_dir: Path) -> None:
    trees = cli.make_trees("git-clone", tmp_path)
    pristine = trees.digests()
    assert cli.run("apply", *trees.args, lock_dir=lock_dir).returncode == 0
    status = json.loads(cli.run("status", "--json", *trees.args,
                                lock_dir=lock_dir).stdout)
    assert all(t["state"] == "applied" for t in status["trees"])
    assert cli.run("revert", *trees.args, lock_dir=lock_dir).returncode == 0
    assert trees.digests() == pristine


def _series_with_broken(position: int, tree: str, dest: Path) -> Path:
    entries, sources = cli.extended_entries()
    rel = "README.md"
    sources["0000-broken.patch"] = (cli.header("does not apply")
                                    + cli.broken_patch(tree, rel)).encode()
    entries.insert(position, {"file": "0000-broken.patch", "tree": tree,
                              "description": "broken", "origin": "tests"})
    return cli.write_series(dest, entries, sources)


@pytest.mark.parametrize("position", range(len(cli.extended_entries()[0]) + 1))
def test_patch_k_of_n_failing_changes_nothing(position: int, tmp_path: Path,
                                              full_series: Path,
                                              lock_dir: Path) -> None:
    tree = "vllm-ascend" if position % 2 else "vllm"
    series = _series_with_broken(position, tree, tmp_path / "series")
    trees = cli.make_trees("plain", tmp_path)
    before = trees.digests()

    result = cli.run("apply", *trees.args, series=series, lock_dir=lock_dir)

    _refused(result, "0000-broken.patch does not apply")
    assert "README.md: hunk #1" in result.stderr
    assert trees.digests() == before


def test_tampered_patch_is_refused(tmp_path: Path, full_series: Path,
                                   lock_dir: Path) -> None:
    series = tmp_path / "series"
    shutil.copytree(full_series, series)
    patch = series / "9001-test-vllm.patch"
    patch.write_bytes(patch.read_bytes().replace(b"MARK = 1", b"MARK = 2"))
    trees = cli.make_trees("plain", tmp_path)
    before = trees.digests()

    result = cli.run("apply", *trees.args, series=series, lock_dir=lock_dir)

    _refused(result, "tampered")
    assert trees.digests() == before


@pytest.mark.parametrize("target", ["../escape.py", "/etc/dsv4patch-test",
                                    "vllm/../../escape.py"])
def test_traversal_patch_is_refused(target: str, tmp_path: Path,
                                    lock_dir: Path) -> None:
    data = (cli.header("escape") + cli.new_file_patch(target.lstrip("/"), ["x"])
            .replace(target.lstrip("/"), target)).encode()
    series = cli.write_series(tmp_path / "series", [
        {"file": "0001-escape.patch", "tree": "vllm", "description": "e",
         "origin": "tests"}], {"0001-escape.patch": data})
    trees = cli.make_trees("plain", tmp_path)
    before = trees.digests()

    result = cli.run("apply", *trees.args, series=series, lock_dir=lock_dir)

    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("Error: ")
    assert "outside its tree" in result.stderr or "cannot read" in result.stderr
    assert trees.digests() == before
    assert not (tmp_path / "escape.py").exists()


def test_symlink_escape_is_refused(tmp_path: Path, full_series: Path,
                                   lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (trees.vllm / "vllm" / "dsv4patch_test").symlink_to(outside)
    before = trees.digests()

    result = cli.run("apply", *trees.args, series=full_series, lock_dir=lock_dir)

    _refused(result, "symlink")
    assert trees.digests() == before and not any(outside.iterdir())


@pytest.mark.parametrize("how", ["version-file", "git-tag", "content"])
def test_tree_at_another_version_is_refused(how: str, tmp_path: Path,
                                            full_series: Path, lock_dir: Path) -> None:
    trees = cli.make_trees("git-clone" if how == "git-tag" else "plain", tmp_path)
    if how == "version-file":
        version_file = trees.vllm / "vllm/_version.py"
        version_file.write_text("__version__ = version = '0.12.0'\n")
    elif how == "git-tag":
        cli.git(trees.vllm, "tag", "-d", "v0.13.0")
        cli.git(trees.vllm, "tag", "v0.12.0")
    else:
        # Another release: many tracked files differ, the series' ones included.
        for index, path in enumerate(sorted((trees.vllm / "vllm").rglob("*.py"))):
            if index % 3 == 0:
                path.write_text(path.read_text() + "# 0.12.0\n")
    before = trees.digests()

    result = cli.run("apply", *trees.args, series=full_series, lock_dir=lock_dir)

    _refused(result, "0.13.0")
    assert trees.digests() == before


def test_local_edits_in_touched_files_are_refused(tmp_path: Path, full_series: Path,
                                                  lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    (rel,) = cli.paths_of((full_series / "9002-test-ascend.patch").read_bytes())
    edited = trees.ascend / rel
    edited.write_text("# my local change\n" + edited.read_text())
    before = trees.digests()

    result = cli.run("apply", *trees.args, series=full_series, lock_dir=lock_dir)

    _refused(result, "local edits")
    assert rel in result.stderr
    assert trees.digests() == before


def test_read_only_tree_is_refused(tmp_path: Path, full_series: Path,
                                   lock_dir: Path) -> None:
    if shutil.which("chattr") is None or os.geteuid() != 0:
        pytest.skip("needs root and chattr to make a tree truly read-only")
    trees = cli.make_trees("plain", tmp_path)
    target = trees.ascend / "vllm_ascend"
    # The immutable flag stops root too, unlike chmod.
    if subprocess.run(["chattr", "+i", str(target)]).returncode != 0:
        pytest.skip("this file system has no immutable flag")
    before = trees.digests()
    try:
        result = cli.run("apply", *trees.args, series=full_series, lock_dir=lock_dir)
    finally:
        subprocess.run(["chattr", "-i", str(target)], check=True)

    _refused(result, "not writable")
    assert trees.digests() == before


def test_missing_git_is_refused(tmp_path: Path, full_series: Path,
                                lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    before = trees.digests()

    result = cli.run("apply", *trees.args, series=full_series, lock_dir=lock_dir,
                     env={"PATH": str(bin_dir)})

    _refused(result, "git was not found")
    assert trees.digests() == before


def test_missing_tree_is_refused(tmp_path: Path, full_series: Path,
                                 lock_dir: Path) -> None:
    result = cli.run("apply", "--vllm", str(tmp_path / "nope"), "--vllm-ascend",
                     str(tmp_path / "nope2"), series=full_series, lock_dir=lock_dir)
    _refused(result, "does not exist")


def test_trees_from_environment(tmp_path: Path, full_series: Path,
                                lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    env = {"DSV4PATCH_VLLM": str(trees.vllm),
           "DSV4PATCH_VLLM_ASCEND": str(trees.ascend)}
    result = cli.run("apply", "--dry-run", series=full_series, lock_dir=lock_dir,
                     env=env)
    assert result.returncode == 0, result.stderr
    assert "would apply" in result.stdout and str(trees.vllm) in result.stdout


def test_dry_run_changes_nothing(tmp_path: Path, full_series: Path,
                                 lock_dir: Path) -> None:
    trees = cli.make_trees("git-clone", tmp_path)
    before = trees.digests()
    result = cli.run("apply", "--dry-run", *trees.args, series=full_series,
                     lock_dir=lock_dir)
    assert result.returncode == 0 and "would apply" in result.stdout
    assert trees.digests() == before


def test_stale_bytecode_of_touched_files_is_removed(tmp_path: Path, full_series: Path,
                                                    lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    rel = cli.paths_of((full_series / "9001-test-vllm.patch").read_bytes())[0]
    source = trees.vllm / rel
    cache = source.parent / "__pycache__"
    cache.mkdir(exist_ok=True)
    stale = cache / f"{source.stem}.cpython-311.pyc"
    stale.write_bytes(b"stale")
    other = cache / "untouched_module.cpython-311.pyc"
    other.write_bytes(b"keep")

    assert cli.run("apply", *trees.args, series=full_series,
                   lock_dir=lock_dir).returncode == 0
    assert not stale.exists() and other.exists()


def test_revert_refuses_files_edited_after_apply(tmp_path: Path, full_series: Path,
                                                 lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    assert cli.run("apply", *trees.args, series=full_series,
                   lock_dir=lock_dir).returncode == 0
    marker = trees.vllm / "vllm/dsv4patch_test/marker.py"
    marker.write_text("MARK = 1\nMY_EDIT = True\n")
    before = trees.digests()

    result = cli.run("revert", *trees.args, series=full_series, lock_dir=lock_dir)

    _refused(result, "edited after apply")
    assert "vllm/dsv4patch_test/marker.py" in result.stderr
    assert trees.digests() == before
    assert "MY_EDIT" in marker.read_text()
    status = json.loads(cli.run("status", "--json", *trees.args, series=full_series,
                                lock_dir=lock_dir).stdout)
    vllm = status["trees"][0]
    assert vllm["state"] == "edited after apply"
    assert vllm["files"]["vllm/dsv4patch_test/marker.py"] == "edited after apply"


def test_patch_leaving_code_that_does_not_compile_is_refused(tmp_path: Path,
                                                             lock_dir: Path) -> None:
    rel = cli.VLLM_EXTRA[0]
    data = (cli.header("syntax error") + cli.append_patch("vllm", rel, "def (:"))
    series = cli.write_series(tmp_path / "series", [
        {"file": "0001-bad.patch", "tree": "vllm", "description": "b",
         "origin": "tests"}], {"0001-bad.patch": data.encode()})
    trees = cli.make_trees("plain", tmp_path)
    before = trees.digests()

    result = cli.run("apply", *trees.args, series=series, lock_dir=lock_dir)

    _refused(result, "does not compile")
    assert rel in result.stderr and trees.digests() == before


def test_apply_over_another_series_is_refused(tmp_path: Path, full_series: Path,
                                              lock_dir: Path) -> None:
    entries, sources = cli.extended_entries()
    older = cli.write_series(tmp_path / "older", entries[:-1], sources)
    trees = cli.make_trees("plain", tmp_path)
    assert cli.run("apply", *trees.args, series=older,
                   lock_dir=lock_dir).returncode == 0
    before = trees.digests()

    result = cli.run("apply", *trees.args, series=full_series, lock_dir=lock_dir)

    _refused(result, "carries series")
    assert "dsv4patch revert" in result.stderr
    assert trees.digests() == before
    # The journal, not the release's series, says what to undo.
    assert cli.run("revert", *trees.args, series=full_series,
                   lock_dir=lock_dir).returncode == 0
    assert cli.run("apply", *trees.args, series=full_series,
                   lock_dir=lock_dir).returncode == 0


def _chattr(flag: str, *paths: Path) -> None:
    if shutil.which("chattr") is None or os.geteuid() != 0:
        pytest.skip("needs root and chattr for an immutable file")
    if subprocess.run(["chattr", flag, *map(str, paths)]).returncode != 0:
        pytest.skip("this file system has no immutable flag")


@pytest.mark.parametrize("what", ["file", "directory"])
def test_undeletable_bytecode_is_refused_before_anything_changes(
        what: str, tmp_path: Path, full_series: Path, lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    rel = cli.paths_of((full_series / "9001-test-vllm.patch").read_bytes())[0]
    cache = (trees.vllm / rel).parent / "__pycache__"
    cache.mkdir(exist_ok=True)
    stale = cache / f"{Path(rel).stem}.cpython-311.pyc"
    stale.write_bytes(b"stale")
    target = stale if what == "file" else cache
    before = trees.digests()
    _chattr("+i", target)
    try:
        result = cli.run("apply", *trees.args, series=full_series, lock_dir=lock_dir)
        after = trees.digests()
    finally:
        subprocess.run(["chattr", "-i", str(target)], check=True)

    _refused(result, "not writable")
    assert after == before


def test_revert_survives_undeletable_bytecode(tmp_path: Path, full_series: Path,
                                              lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    rel = cli.paths_of((full_series / "9001-test-vllm.patch").read_bytes())[0]
    original = (trees.vllm / rel).read_bytes()
    assert cli.run("apply", *trees.args, series=full_series,
                   lock_dir=lock_dir).returncode == 0
    cache = (trees.vllm / rel).parent / "__pycache__"
    cache.mkdir(exist_ok=True)
    stale = cache / f"{Path(rel).stem}.cpython-311.pyc"
    stale.write_bytes(b"stale")
    _chattr("+i", stale)
    try:
        result = cli.run("revert", *trees.args, series=full_series, lock_dir=lock_dir)
    finally:
        subprocess.run(["chattr", "-i", str(stale)], check=True)

    assert result.returncode == 0, result.stderr
    assert "could not remove the cached bytecode" in result.stderr
    assert (trees.vllm / rel).read_bytes() == original
    assert not (trees.vllm / ".dsv4patch").exists()


@pytest.mark.parametrize("bad", ["../../victim.txt", "/abs/victim.txt",
                                 "vllm/not_in_the_series.py"])
def test_revert_refuses_journal_paths_outside_the_series(
        bad: str, tmp_path: Path, full_series: Path, lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    assert cli.run("apply", *trees.args, series=full_series,
                   lock_dir=lock_dir).returncode == 0
    journal_file = trees.vllm / ".dsv4patch/journal.json"
    journal = json.loads(journal_file.read_text())
    digest = hashlib.sha256(victim.read_bytes()).hexdigest()
    journal["files"].append({"path": bad, "before": None, "after": digest})
    journal_file.write_text(json.dumps(journal))
    before = trees.digests()

    result = cli.run("revert", *trees.args, series=full_series, lock_dir=lock_dir)

    _refused(result, "not a file this series changes")
    assert victim.read_text() == "keep me\n" and trees.digests() == before


def test_symlinked_work_directory_is_refused(tmp_path: Path, full_series: Path,
                                             lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (trees.ascend / ".dsv4patch").symlink_to(outside)
    before = trees.digests()

    result = cli.run("apply", *trees.args, series=full_series, lock_dir=lock_dir)

    _refused(result, "not a plain directory")
    assert list(outside.iterdir()) == [] and trees.digests() == before
