"""Series upgrades in place, and the earlier hand-applied patch, through the CLI.

The older series (0.0.9) is the real one without patch 0004, plus two patches
of its own: one changes a vLLM file and adds a module, one changes a vllm-ascend
file, all files the current series leaves alone. An upgrade must therefore
restore files, remove one, and add patches, in both trees.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support import cli
from tests.support.fixtures import fixture_lock_dir  # noqa: F401

OLD, NEW = "0.0.9", "0.1.0"
OLD_VLLM = "0090-old-vllm.patch"
OLD_ASCEND = "0091-old-ascend.patch"
OLD_MARKER = "vllm/dsv4patch_old/marker.py"


def _versioned(dest: Path, version: str, entries: list[dict[str, str]],
               sources: dict[str, bytes]) -> Path:
    series = cli.write_series(dest, entries, sources)
    manifest = series / "series.toml"
    text = manifest.read_text()
    manifest.write_text(text.replace('version = "0.0.0-test"',
                                     f'version = "{version}"', 1))
    return series


def _old_entries() -> tuple[list[dict[str, str]], dict[str, bytes]]:
    entries, sources = cli.real_entries()
    entries = [e for e in entries if not e["file"].startswith("0004-")]
    taken = {rel for data in sources.values() for rel in cli.paths_of(data)}
    vllm_rel = next(rel for rel in cli.VLLM_EXTRA if rel not in taken)
    ascend_rel = next(rel for rel in cli.ASCEND_EXTRA if rel not in taken)
    sources[OLD_VLLM] = (cli.header("old: touch one file, add a module")
                         + cli.append_patch("vllm", vllm_rel, "# old series line")
                         + cli.new_file_patch(OLD_MARKER, ["OLD = 1"])).encode()
    sources[OLD_ASCEND] = (cli.header("old: touch one vllm-ascend file")
                           + cli.append_patch("vllm-ascend", ascend_rel,
                                              "# old series line")).encode()
    entries += [{"file": OLD_VLLM, "tree": "vllm", "description": "old",
                 "origin": "tests"},
                {"file": OLD_ASCEND, "tree": "vllm-ascend", "description": "old",
                 "origin": "tests"}]
    return entries, sources


@pytest.fixture(name="old_series", scope="module")
def fixture_old_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    entries, sources = _old_entries()
    return _versioned(tmp_path_factory.mktemp("old"), OLD, entries, sources)


@pytest.fixture(name="new_series", scope="module")
def fixture_new_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's series as a copy, so the test pins what it upgrades to."""
    entries, sources = cli.real_entries()
    return _versioned(tmp_path_factory.mktemp("new"), NEW, entries, sources)


JOURNAL = ".dsv4patch/journal.json"


def _journal(tree: Path) -> dict:
    return json.loads((tree / JOURNAL).read_text())


def _digest(tree: Path, skip_journal: bool = True) -> str:
    """journal.json's timestamps differ between runs, so it is compared field by
    field instead."""
    return cli.digest(tree, (JOURNAL,) if skip_journal else ())


def _comparable(journal: dict) -> dict:
    return {k: v for k, v in journal.items()
            if k not in ("started", "finished", "upgraded_from")}


@pytest.fixture(name="reference", scope="module")
def fixture_reference(tmp_path_factory: pytest.TempPathFactory,
                      new_series: Path) -> dict[str, tuple[str, dict]]:
    """Both trees after a fresh apply of the new series on pristine copies."""
    root = tmp_path_factory.mktemp("reference")
    trees = cli.make_trees("plain", root)
    done = cli.run("apply", *trees.args, series=new_series, lock_dir=root / "locks")
    assert done.returncode == 0, done.stderr
    return {"vllm": (_digest(trees.vllm), _comparable(_journal(trees.vllm))),
            "ascend": (_digest(trees.ascend), _comparable(_journal(trees.ascend)))}


@pytest.fixture(name="pristine", scope="module")
def fixture_pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    trees = cli.make_trees("plain", tmp_path_factory.mktemp("pristine"))
    return _digest(trees.vllm, False), _digest(trees.ascend, False)


def _old_applied(tmp_path: Path, old_series: Path, lock_dir: Path) -> cli.Trees:
    trees = cli.make_trees("plain", tmp_path)
    done = cli.run("apply", *trees.args, series=old_series, lock_dir=lock_dir)
    assert done.returncode == 0, done.stderr
    assert _journal(trees.vllm)["series_version"] == OLD
    return trees


def _full(trees: cli.Trees) -> tuple[str, str]:
    return _digest(trees.vllm, False), _digest(trees.ascend, False)


def _assert_upgraded(trees: cli.Trees, reference: dict[str, tuple[str, dict]]) -> None:
    for tree, key in ((trees.vllm, "vllm"), (trees.ascend, "ascend")):
        digest, journal = reference[key]
        assert _digest(tree) == digest, f"{key} differs from a fresh apply"
        assert _comparable(_journal(tree)) == journal
        assert _journal(tree)["series_version"] == NEW
        assert not (tree / ".dsv4patch" / "upgrade").exists()


def _assert_old_intact(trees: cli.Trees, before: tuple[str, str], old_series: Path,
                       lock_dir: Path) -> None:
    assert _full(trees) == before
    status = cli.run("status", "--json", *trees.args, lock_dir=lock_dir,
                     series=old_series)
    assert status.returncode == 0, status.stderr
    states = [(t["state"], t["applied_series"])
              for t in json.loads(status.stdout)["trees"]]
    assert states == [("applied", OLD), ("applied", OLD)]


def _refused(result: subprocess.CompletedProcess[str], words: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-2].startswith("Error: ") and words in lines[-2], result.stderr
    assert lines[-1].startswith("hint: "), result.stderr


def test_upgrade_ends_as_a_fresh_apply_and_reverts_to_pristine(
        tmp_path: Path, old_series: Path, new_series: Path, lock_dir: Path,
        reference: dict[str, tuple[str, dict]], pristine: tuple[str, str]) -> None:
    trees = _old_applied(tmp_path, old_series, lock_dir)
    assert (trees.vllm / OLD_MARKER).is_file()

    done = cli.run("apply", *trees.args, series=new_series, lock_dir=lock_dir)

    assert done.returncode == 0, done.stderr
    assert f"upgraded {OLD} -> {NEW}" in done.stdout
    _assert_upgraded(trees, reference)
    assert not (trees.vllm / OLD_MARKER).exists()
    assert not (trees.vllm / OLD_MARKER).parent.exists()
    assert _journal(trees.vllm)["upgraded_from"] == OLD
    again = cli.run("apply", *trees.args, series=new_series, lock_dir=lock_dir)
    assert again.returncode == 0 and "already applied" in again.stdout
    reverted = cli.run("revert", *trees.args, series=new_series, lock_dir=lock_dir)
    assert reverted.returncode == 0, reverted.stderr
    assert _full(trees) == pristine


def test_check_status_and_dry_run_announce_the_upgrade(
        tmp_path: Path, old_series: Path, new_series: Path, lock_dir: Path) -> None:
    trees = _old_applied(tmp_path, old_series, lock_dir)
    before = _full(trees)
    announced = f"would upgrade {OLD} -> {NEW}"

    check = cli.run("check", *trees.args, series=new_series, lock_dir=lock_dir)
    dry = cli.run("apply", "--dry-run", *trees.args, series=new_series,
                  lock_dir=lock_dir)
    status = cli.run("status", "--json", *trees.args, series=new_series,
                     lock_dir=lock_dir)

    assert check.returncode == 0, check.stdout + check.stderr
    assert announced in check.stdout and "would upgrade" in check.stdout
    assert dry.returncode == 0 and dry.stdout.count(announced) == 2, dry.stdout
    assert status.returncode == 0, status.stderr
    notes = [t["note"] for t in json.loads(status.stdout)["trees"]]
    assert all(announced in note for note in notes), notes
    assert _full(trees) == before


@pytest.mark.parametrize("step", ["backup", "journal", "replace-first", "committed"])
def test_sigterm_during_an_upgrade_keeps_the_old_series(
        step: str, tmp_path: Path, old_series: Path, new_series: Path,
        lock_dir: Path, pristine: tuple[str, str]) -> None:
    trees = _old_applied(tmp_path, old_series, lock_dir)
    before = _full(trees)

    stopped = cli.run("apply", *trees.args, series=new_series, lock_dir=lock_dir,
                      env={"DSV4PATCH_TEST_PAUSE_AT": step,
                           "DSV4PATCH_TEST_SIGNAL": "TERM"})

    assert stopped.returncode == 130, stopped.stderr
    _assert_old_intact(trees, before, old_series, lock_dir)
    reverted = cli.run("revert", *trees.args, series=new_series, lock_dir=lock_dir)
    assert reverted.returncode == 0, reverted.stderr
    assert _full(trees) == pristine


@pytest.mark.parametrize(("step", "recover_with"), [
    ("backup", "apply"), ("journal", "revert"), ("replace-first", "apply"),
    ("replace-first", "revert"), ("bytecode", "apply"), ("committed", "revert"),
    ("committed", "apply"),
])
def test_sigkill_during_an_upgrade_is_recovered(
        step: str, recover_with: str, tmp_path: Path, old_series: Path,
        new_series: Path, lock_dir: Path, reference: dict[str, tuple[str, dict]],
        pristine: tuple[str, str]) -> None:
    trees = _old_applied(tmp_path, old_series, lock_dir)

    killed = cli.run("apply", *trees.args, series=new_series, lock_dir=lock_dir,
                     env={"DSV4PATCH_TEST_PAUSE_AT": step})

    assert killed.returncode == -signal.SIGKILL
    status = cli.run("status", "--json", *trees.args, series=new_series,
                     lock_dir=lock_dir)
    assert status.returncode == 0, status.stderr
    reported = json.loads(status.stdout)["trees"]
    # The old journal stays in force until the switch at the very end.
    expected = NEW if step == "committed" else OLD
    assert [t["applied_series"] for t in reported] == [expected, expected]
    assert [t["state"] for t in reported] == ["interrupted", "interrupted"]
    assert all("upgrade was interrupted" in t["note"] for t in reported)

    recovered = cli.run(recover_with, *trees.args, series=new_series,
                        lock_dir=lock_dir)

    assert recovered.returncode == 0, recovered.stderr
    if recover_with == "apply":
        _assert_upgraded(trees, reference)
    else:
        assert _full(trees) == pristine


def test_a_new_series_that_conflicts_changes_nothing(
        tmp_path: Path, old_series: Path, lock_dir: Path,
        pristine: tuple[str, str]) -> None:
    entries, sources = cli.real_entries()
    sources["0099-conflict.patch"] = (
        cli.header("conflicts") + cli.broken_patch("vllm", "vllm/envs.py")).encode()
    entries.append({"file": "0099-conflict.patch", "tree": "vllm",
                    "description": "c", "origin": "tests"})
    newer = _versioned(tmp_path / "newer", "0.2.0", entries, sources)
    trees = _old_applied(tmp_path, old_series, lock_dir)
    before = _full(trees)

    result = cli.run("apply", *trees.args, series=newer, lock_dir=lock_dir)

    _refused(result, "0099-conflict.patch does not apply")
    _assert_old_intact(trees, before, old_series, lock_dir)
    check = cli.run("check", *trees.args, series=newer, lock_dir=lock_dir)
    assert check.returncode == 1 and "apply would refuse" in check.stdout
    reverted = cli.run("revert", *trees.args, series=newer, lock_dir=lock_dir)
    assert reverted.returncode == 0, reverted.stderr
    assert _full(trees) == pristine


def test_downgrade_and_same_version_other_bytes_are_refused(
        tmp_path: Path, old_series: Path, new_series: Path, lock_dir: Path) -> None:
    entries, sources = _old_entries()
    imposter = _versioned(tmp_path / "imposter", NEW, entries, sources)
    trees = cli.make_trees("plain", tmp_path)
    assert cli.run("apply", *trees.args, series=new_series,
                   lock_dir=lock_dir).returncode == 0
    before = _full(trees)

    down = cli.run("apply", *trees.args, series=old_series, lock_dir=lock_dir)
    same = cli.run("apply", *trees.args, series=imposter, lock_dir=lock_dir)
    check = cli.run("check", *trees.args, series=old_series, lock_dir=lock_dir)

    _refused(down, "refusing to downgrade")
    _refused(same, "has other patches")
    assert check.returncode == 1 and "refusing to downgrade" in check.stdout
    assert _full(trees) == before


def _drop_series_copy(trees: cli.Trees) -> None:
    """Make both journals look like ones written before the series copy."""
    for tree in (trees.vllm, trees.ascend):
        journal = _journal(tree)
        del journal["series_copy"], journal["upgraded_from"]
        (tree / ".dsv4patch" / "journal.json").write_text(json.dumps(journal))
        shutil.rmtree(tree / ".dsv4patch" / "series")


def test_journals_without_a_series_copy_still_upgrade_and_revert(
        tmp_path: Path, new_series: Path, lock_dir: Path,
        reference: dict[str, tuple[str, dict]], pristine: tuple[str, str]) -> None:
    # Without a copy only the running series' files are trusted, so this older
    # series stays inside them: the real one without patch 0004.
    entries, sources = cli.real_entries()
    entries = [e for e in entries if not e["file"].startswith("0004-")]
    inside = _versioned(tmp_path / "inside", OLD, entries, sources)
    trees = _old_applied(tmp_path, inside, lock_dir)
    _drop_series_copy(trees)

    done = cli.run("apply", *trees.args, series=new_series, lock_dir=lock_dir)

    assert done.returncode == 0, done.stderr
    _assert_upgraded(trees, reference)
    _drop_series_copy(trees)
    reverted = cli.run("revert", *trees.args, series=new_series, lock_dir=lock_dir)
    assert reverted.returncode == 0, reverted.stderr
    assert _full(trees) == pristine


def test_a_journal_without_a_copy_naming_other_files_is_refused(
        tmp_path: Path, old_series: Path, new_series: Path, lock_dir: Path) -> None:
    trees = _old_applied(tmp_path, old_series, lock_dir)
    _drop_series_copy(trees)
    before = _full(trees)

    result = cli.run("apply", *trees.args, series=new_series, lock_dir=lock_dir)

    _refused(result, "not a file this series changes")
    assert _full(trees) == before
    # The documented way out: the older series reverts its own journal.
    assert cli.run("revert", *trees.args, series=old_series,
                   lock_dir=lock_dir).returncode == 0


def test_a_lost_backup_is_rebuilt_from_the_stored_series(
        tmp_path: Path, old_series: Path, new_series: Path, lock_dir: Path,
        reference: dict[str, tuple[str, dict]]) -> None:
    trees = _old_applied(tmp_path, old_series, lock_dir)
    changed = next(r["path"] for r in _journal(trees.vllm)["files"]
                   if r["before"] is not None and r["before"] != r["after"])
    (trees.vllm / ".dsv4patch" / "backup" / changed).unlink()

    done = cli.run("apply", *trees.args, series=new_series, lock_dir=lock_dir)

    assert done.returncode == 0, done.stderr
    assert "from the stored series" in done.stderr
    _assert_upgraded(trees, reference)


def test_a_tampered_series_copy_is_reported(tmp_path: Path, old_series: Path,
                                            new_series: Path, lock_dir: Path) -> None:
    trees = _old_applied(tmp_path, old_series, lock_dir)
    copy = trees.vllm / ".dsv4patch" / _journal(trees.vllm)["series_copy"]
    with open(copy / OLD_VLLM, "a") as f:
        f.write("# tampered\n")
    before = _full(trees)

    result = cli.run("apply", *trees.args, series=new_series, lock_dir=lock_dir)

    _refused(result, "series copy")
    assert _full(trees) == before


def test_an_upgrade_refuses_files_edited_after_apply(
        tmp_path: Path, old_series: Path, new_series: Path, lock_dir: Path) -> None:
    trees = _old_applied(tmp_path, old_series, lock_dir)
    with open(trees.vllm / OLD_MARKER, "a") as f:
        f.write("LOCAL = 2\n")
    before = _full(trees)

    result = cli.run("apply", *trees.args, series=new_series, lock_dir=lock_dir)

    _refused(result, "edited after apply")
    assert OLD_MARKER in result.stderr
    assert _full(trees) == before


EARLIER = "the earlier deepseek-v4-agentic-support.patch appears applied to"


def _earlier_patch(vllm: Path) -> list[str]:
    """Edit a pristine vLLM tree the way a hand-applied DeepSeek-V4 patch would."""
    added = "vllm/reasoning/deepseek_v4_reasoning_parser.py"
    (vllm / added).write_text('# earlier\nSTART = "<｜DSML｜function_calls>"\n')
    registry = "vllm/reasoning/__init__.py"
    with open(vllm / registry, "a") as f:
        f.write('# "deepseek_v4": ("deepseek_v4_reasoning_parser", "Parser"),\n')
    return [added, registry]


def test_the_earlier_patch_is_named_and_refused(tmp_path: Path,
                                                lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    files = _earlier_patch(trees.vllm)
    before = _full(trees)

    check = cli.run("check", *trees.args, lock_dir=lock_dir)
    apply = cli.run("apply", *trees.args, lock_dir=lock_dir)
    status = cli.run("status", "--json", *trees.args, lock_dir=lock_dir)

    assert check.returncode == 1 and EARLIER in check.stdout
    _refused(apply, EARLIER)
    assert all(rel in apply.stderr for rel in files)
    assert "patch -R -p1" in apply.stderr
    assert status.returncode == 0
    vllm = json.loads(status.stdout)["trees"][0]
    assert EARLIER in vllm["note"] and all(rel in vllm["note"] for rel in files)
    assert _full(trees) == before


def test_our_own_series_is_not_taken_for_the_earlier_patch(
        tmp_path: Path, lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    assert cli.run("apply", *trees.args, lock_dir=lock_dir).returncode == 0
    shutil.rmtree(trees.vllm / ".dsv4patch")
    # A DSML mention in a file the base already has with DSML is not a sign.
    edited_v32 = trees.vllm / "vllm/tool_parsers/deepseekv32_tool_parser.py"
    with open(edited_v32, "a") as f:
        f.write("# local note about ｜DSML｜\n")

    check = cli.run("check", *trees.args, lock_dir=lock_dir)
    status = cli.run("status", *trees.args, lock_dir=lock_dir)

    assert EARLIER not in check.stdout + check.stderr
    assert EARLIER not in status.stdout
    assert check.returncode == 0, check.stdout + check.stderr


def test_one_tree_upgraded_while_the_other_gets_its_first_apply(
        tmp_path: Path, new_series: Path, lock_dir: Path,
        reference: dict[str, tuple[str, dict]]) -> None:
    entries, sources = cli.real_entries()
    vllm_only = _versioned(tmp_path / "vllm-only", OLD,
                           [e for e in entries if e["tree"] == "vllm"], sources)
    trees = cli.make_trees("plain", tmp_path)
    assert cli.run("apply", *trees.args, series=vllm_only,
                   lock_dir=lock_dir).returncode == 0
    assert not (trees.ascend / ".dsv4patch").exists()

    done = cli.run("apply", *trees.args, series=new_series, lock_dir=lock_dir)

    assert done.returncode == 0, done.stderr
    assert f"vllm ({trees.vllm}): upgraded {OLD} -> {NEW}" in done.stdout
    assert f"vllm-ascend ({trees.ascend}): applied" in done.stdout
    _assert_upgraded(trees, reference)


@pytest.mark.parametrize(("older", "newer"), [
    ("0.0.9", "0.1.0"), ("0.9.1", "0.10.0"), ("0.2.0-rc1", "0.2.0"),
    ("0.1.0", "0.1.1"), ("1", "1.0.1"),
])
def test_series_versions_order_numerically(older: str, newer: str) -> None:
    from dsv4patch.upgrade import version_key

    assert version_key(older) < version_key(newer)
    assert version_key("0.1") == version_key("0.1.0")


def test_a_series_copy_named_outside_the_work_directory_is_damage(
        tmp_path: Path, old_series: Path, new_series: Path, lock_dir: Path) -> None:
    trees = _old_applied(tmp_path, old_series, lock_dir)
    journal = _journal(trees.vllm)
    journal["series_copy"] = "../../elsewhere"
    (trees.vllm / ".dsv4patch" / "journal.json").write_text(json.dumps(journal))
    before = _full(trees)

    result = cli.run("apply", *trees.args, series=new_series, lock_dir=lock_dir)

    _refused(result, "series copy outside")
    assert _full(trees) == before


def test_scratch_journal_writes_left_by_a_killed_run_are_cleaned(
        tmp_path: Path, old_series: Path, new_series: Path, lock_dir: Path,
        reference: dict[str, tuple[str, dict]]) -> None:
    trees = _old_applied(tmp_path, old_series, lock_dir)
    # What a SIGKILL inside an atomic write leaves: the scratch file, before
    # its rename, next to the journal and inside the stored series copy.
    for tree in (trees.vllm, trees.ascend):
        work = tree / ".dsv4patch"
        (work / ".journal.json.k1ll3d.dsv4patch-tmp").write_bytes(b"")
        (copy,) = (work / "series").iterdir()
        (copy / ".series.toml.k1ll3d.dsv4patch-tmp").write_bytes(b'version = "')

    upgraded = cli.run("apply", *trees.args, series=new_series, lock_dir=lock_dir)

    assert upgraded.returncode == 0, upgraded.stderr
    _assert_upgraded(trees, reference)
