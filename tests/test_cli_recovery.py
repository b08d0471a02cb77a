"""Interrupted runs, concurrent runs and lost journals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsv4patch.hooks import APPLY_STEPS as STEPS
from dsv4patch.hooks import REVERT_STEPS
from tests.support import cli
from tests.support import trees as support_trees
from tests.support.fixtures import fixture_full_series, fixture_lock_dir  # noqa: F401

# Steps at which the journal already says `applying`.
JOURNALED = STEPS[STEPS.index("journal"):STEPS.index("committed")]


@pytest.fixture(scope="module")
def applied_digests(tmp_path_factory: pytest.TempPathFactory,
                    full_series: Path) -> tuple[str, str]:
    """What both trees look like after a clean apply of the full series."""
    root = tmp_path_factory.mktemp("reference")
    trees = cli.make_trees("plain", root)
    done = cli.run("apply", *trees.args, series=full_series, lock_dir=root / "locks")
    assert done.returncode == 0, done.stderr
    return _without_journal(trees.vllm), _without_journal(trees.ascend)


def _without_journal(tree: Path) -> str:
    """The tree's digest as it would be with the journal directory moved away."""
    work = tree / ".dsv4patch"
    if not work.exists():
        return cli.digest(tree)
    aside = tree.parent / f"{tree.name}.journal-aside"
    work.rename(aside)
    try:
        return cli.digest(tree)
    finally:
        aside.rename(work)


@pytest.mark.parametrize("recover_with", ["apply", "revert"])
@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_each_step_is_recoverable(step: str, recover_with: str,
                                             tmp_path: Path,
                                             full_series: Path,
                                             applied_digests: tuple[str, str],
                                             lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    pristine = trees.digests()

    killed = cli.run("apply", *trees.args, series=full_series, lock_dir=lock_dir,
                     env={"DSV4PATCH_TEST_PAUSE_AT": step})
    assert killed.returncode == -signal.SIGKILL

    status = cli.run("status", "--json", *trees.args, series=full_series,
                     lock_dir=lock_dir)
    assert status.returncode == 0, status.stderr
    states = [t["state"] for t in json.loads(status.stdout)["trees"]]
    if step in JOURNALED:
        assert states == ["interrupted", "interrupted"]
    elif step == "committed":
        assert states == ["applied", "applied"]
    else:
        assert states == ["not applied", "not applied"]

    recovered = cli.run(recover_with, *trees.args, series=full_series,
                        lock_dir=lock_dir)
    assert recovered.returncode == 0, recovered.stderr
    if recover_with == "apply":
        assert (_without_journal(trees.vllm), _without_journal(trees.ascend)) == \
            applied_digests
        final = json.loads(cli.run("status", "--json", *trees.args, series=full_series,
                                   lock_dir=lock_dir).stdout)
        assert [t["state"] for t in final["trees"]] == ["applied", "applied"]
    else:
        assert trees.digests() == pristine


@pytest.mark.parametrize("step", REVERT_STEPS)
def test_sigkill_during_revert_resumes(step: str, tmp_path: Path,
                                       full_series: Path,
                                       lock_dir: Path) -> None:
    trees = cli.make_trees("git-clone", tmp_path)
    pristine = trees.digests()
    assert cli.run("apply", *trees.args, series=full_series,
                   lock_dir=lock_dir).returncode == 0

    killed = cli.run("revert", *trees.args, series=full_series, lock_dir=lock_dir,
                     env={"DSV4PATCH_TEST_PAUSE_AT": step})
    assert killed.returncode == -signal.SIGKILL
    status = json.loads(cli.run("status", "--json", *trees.args, series=full_series,
                                lock_dir=lock_dir).stdout)
    assert status["trees"][0]["state"] == "interrupted"
    assert status["trees"][0]["journal"] == "reverting"
    assert status["trees"][0]["note"].startswith("a run that was reverting was "
                                                 "interrupted")

    assert cli.run("revert", *trees.args, series=full_series,
                   lock_dir=lock_dir).returncode == 0
    assert trees.digests() == pristine


@pytest.mark.parametrize("sig", ["TERM", "INT"])
@pytest.mark.parametrize("step", ["journal", "replace-first", "replaced", "bytecode"])
def test_sigterm_and_sigint_restore_everything(step: str, sig: str, tmp_path: Path,
                                               full_series: Path,
                                               lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    pristine = trees.digests()

    result = cli.run("apply", *trees.args, series=full_series, lock_dir=lock_dir,
                     env={"DSV4PATCH_TEST_PAUSE_AT": step,
                          "DSV4PATCH_TEST_SIGNAL": sig})

    assert result.returncode == 130, result.stderr
    assert "Interrupted" in result.stderr
    assert trees.digests() == pristine


def test_sigterm_during_revert_finishes_the_revert(tmp_path: Path,
                                                   full_series: Path,
                                                   lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    pristine = trees.digests()
    assert cli.run("apply", *trees.args, series=full_series,
                   lock_dir=lock_dir).returncode == 0

    result = cli.run("revert", *trees.args, series=full_series, lock_dir=lock_dir,
                     env={"DSV4PATCH_TEST_PAUSE_AT": "restore-first",
                          "DSV4PATCH_TEST_SIGNAL": "TERM"})

    assert result.returncode == 130
    assert "SIGTERM: the revert finished first" in result.stderr
    assert trees.digests() == pristine


def _popen_apply(trees: cli.Trees, series: Path, lock_dir: Path,
                 **env: str) -> subprocess.Popen[str]:
    full_env = {**os.environ, "PYTHONPATH": str(support_trees.REPO),
                "DSV4PATCH_SERIES": str(series), "DSV4PATCH_LOCK_DIR": str(lock_dir),
                **env}
    return subprocess.Popen([sys.executable, "-m", "dsv4patch", "apply", *trees.args],
                            env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def lose_journals(*tree_paths: Path) -> None:
    """Delete the journal directories, as a careless clean-up would."""
    for tree in tree_paths:
        shutil.rmtree(tree / ".dsv4patch")


def _wait_stopped(process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = Path(f"/proc/{process.pid}/stat").read_text().split(") ")[1][0]
        if state == "T":
            return
        time.sleep(0.05)
    raise AssertionError("the first apply never reached its lock")


@pytest.mark.parametrize("second_waits", [False, True], ids=["refuses", "waits"])
def test_two_concurrent_applies(second_waits: bool, tmp_path: Path,
                                full_series: Path,
                                applied_digests: tuple[str, str],
                                lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    first = _popen_apply(trees, full_series, lock_dir,
                         DSV4PATCH_TEST_PAUSE_AT="locked", DSV4PATCH_TEST_SIGNAL="STOP")
    try:
        _wait_stopped(first)
        second = _popen_apply(trees, full_series, lock_dir,
                              DSV4PATCH_LOCK_WAIT="30" if second_waits else "0.5")
        if second_waits:
            time.sleep(1)
            assert second.poll() is None  # still waiting for the lock
        else:
            out, err = second.communicate(timeout=60)
            assert second.returncode == 1 and "holds the lock" in err
    finally:
        first.send_signal(signal.SIGCONT)
    first.communicate(timeout=120)
    assert first.returncode == 0

    if second_waits:
        out, _ = second.communicate(timeout=120)
        assert second.returncode == 0 and "already applied" in out
    assert (_without_journal(trees.vllm), _without_journal(trees.ascend)) == \
        applied_digests


def test_damaged_journal_has_a_safe_way_out(tmp_path: Path,
                                            full_series: Path,
                                            lock_dir: Path) -> None:
    trees = cli.make_trees("git-clone", tmp_path)
    pristine = trees.digests()
    assert cli.run("apply", *trees.args, series=full_series,
                   lock_dir=lock_dir).returncode == 0
    (trees.vllm / ".dsv4patch/journal.json").write_text('{"state": "appl')

    status = cli.run("status", "--json", *trees.args, series=full_series,
                     lock_dir=lock_dir)
    assert json.loads(status.stdout)["trees"][0]["journal"] == "damaged"
    refused = cli.run("revert", *trees.args, series=full_series, lock_dir=lock_dir)
    assert refused.returncode == 1
    assert "damaged" in refused.stderr and "--from-patches" in refused.stderr

    rescued = cli.run("revert", "--from-patches", *trees.args, series=full_series,
                      lock_dir=lock_dir)
    assert rescued.returncode == 0, rescued.stderr
    assert trees.digests() == pristine


def test_lost_journal_is_named_and_recoverable(tmp_path: Path,
                                               full_series: Path,
                                               lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    pristine = trees.digests()
    assert cli.run("apply", *trees.args, series=full_series,
                   lock_dir=lock_dir).returncode == 0
    lose_journals(trees.vllm, trees.ascend)

    status = json.loads(cli.run("status", "--json", *trees.args, series=full_series,
                                lock_dir=lock_dir).stdout)
    assert [t["state"] for t in status["trees"]] == ["applied without a journal"] * 2
    refused = cli.run("revert", *trees.args, series=full_series, lock_dir=lock_dir)
    assert refused.returncode == 1 and "--from-patches" in refused.stderr

    # apply is idempotent here too, and gives the trees their journals back.
    adopted = cli.run("apply", *trees.args, series=full_series, lock_dir=lock_dir)
    assert adopted.returncode == 0, adopted.stderr
    assert "already applied" in adopted.stdout and "journal was missing" in \
        adopted.stderr
    reverted = cli.run("revert", *trees.args, series=full_series, lock_dir=lock_dir)
    assert reverted.returncode == 0, reverted.stderr
    assert trees.digests() == pristine


def test_dry_run_after_a_kill_changes_nothing(tmp_path: Path,
                                              full_series: Path,
                                              lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    cli.run("apply", *trees.args, series=full_series, lock_dir=lock_dir,
            env={"DSV4PATCH_TEST_PAUSE_AT": "replaced"})
    before = trees.digests()

    result = cli.run("apply", "--dry-run", *trees.args, series=full_series,
                     lock_dir=lock_dir)

    assert result.returncode == 0, result.stderr
    assert "would roll back an interrupted run" in result.stdout
    # A dry run neither does nor claims the recovery.
    assert "recovered" not in result.stdout and "rolling it back" not in \
        result.stderr
    assert trees.digests() == before


def test_revert_from_patches_killed_halfway_resumes(tmp_path: Path,
                                                    full_series: Path,
                                                    lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    pristine = trees.digests()
    assert cli.run("apply", *trees.args, series=full_series,
                   lock_dir=lock_dir).returncode == 0
    lose_journals(trees.vllm, trees.ascend)
    killed = cli.run("revert", "--from-patches", *trees.args, series=full_series,
                     lock_dir=lock_dir,
                     env={"DSV4PATCH_TEST_PAUSE_AT": "restore-first"})
    assert killed.returncode == -signal.SIGKILL

    # The rebuilt journal was written before the first file moved: status sees an
    # interrupted revert, and a plain revert finishes it.
    status = json.loads(cli.run("status", "--json", *trees.args, series=full_series,
                                lock_dir=lock_dir).stdout)
    assert status["trees"][0]["state"] == "interrupted"
    rescued = cli.run("revert", *trees.args, series=full_series, lock_dir=lock_dir)
    assert rescued.returncode == 0, rescued.stderr
    assert trees.digests() == pristine


def test_from_patches_refuses_edited_files(tmp_path: Path,
                                           full_series: Path,
                                           lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    assert cli.run("apply", *trees.args, series=full_series,
                   lock_dir=lock_dir).returncode == 0
    lose_journals(trees.vllm)
    marker = trees.vllm / "vllm/dsv4patch_test/marker.py"
    marker.write_text("MARK = 1\nEDIT = 2\n")
    before = trees.digests()

    result = cli.run("revert", "--from-patches", *trees.args, series=full_series,
                     lock_dir=lock_dir)

    assert result.returncode == 1 and result.stderr.startswith("Error: ")
    assert trees.digests() == before


def test_stages_of_killed_runs_are_swept(tmp_path: Path,
                                         full_series: Path,
                                         lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {"TMPDIR": str(scratch)}
    killed = cli.run("apply", *trees.args, series=full_series, lock_dir=lock_dir,
                     env={**env, "DSV4PATCH_TEST_PAUSE_AT": "journal"})
    assert killed.returncode == -signal.SIGKILL
    assert len(list(scratch.glob("dsv4patch-stage-*"))) == 2  # one per tree

    checked = cli.run("check", "--json", *trees.args, series=full_series,
                      lock_dir=lock_dir, env=env)

    # Killed before any file moved: the series still applies, and check says
    # that an interrupted run is on record.
    assert checked.returncode == 0, checked.stderr
    assert [t["journal"] for t in json.loads(checked.stdout)["trees"]] == \
        ["applying", "applying"]
    assert list(scratch.glob("dsv4patch-stage-*")) == []


def test_revert_of_a_killed_apply_removes_scratch_copies(tmp_path: Path,
                                                         full_series: Path,
                                                         lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    pristine = trees.digests()
    killed = cli.run("apply", *trees.args, series=full_series, lock_dir=lock_dir,
                     env={"DSV4PATCH_TEST_PAUSE_AT": "journal"})
    assert killed.returncode == -signal.SIGKILL
    # What a kill between the copy and the rename inside install() leaves.
    rel = cli.paths_of((full_series / "9001-test-vllm.patch").read_bytes())[0]
    target = trees.vllm / rel
    (target.parent / f".{target.name}.dsv4patch-new").write_text("half written")

    result = cli.run("revert", *trees.args, series=full_series, lock_dir=lock_dir)

    assert result.returncode == 0, result.stderr
    assert trees.digests() == pristine


def test_revert_dry_run_keeps_a_journal_less_work_directory(
        tmp_path: Path, full_series: Path, lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    killed = cli.run("apply", *trees.args, series=full_series, lock_dir=lock_dir,
                     env={"DSV4PATCH_TEST_PAUSE_AT": "backup"})
    assert killed.returncode == -signal.SIGKILL
    before = trees.digests()

    result = cli.run("revert", "--dry-run", *trees.args, series=full_series,
                     lock_dir=lock_dir)

    assert result.returncode == 0, result.stderr
    assert trees.digests() == before and (trees.vllm / ".dsv4patch").is_dir()


def test_the_lock_does_not_depend_on_tmpdir(tmp_path: Path,
                                            full_series: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    base = {k: v for k, v in os.environ.items() if k != "DSV4PATCH_LOCK_DIR"}
    base.update(PYTHONPATH=str(support_trees.REPO), DSV4PATCH_SERIES=str(full_series))
    for name in ("tmp-a", "tmp-b"):
        (tmp_path / name).mkdir()
    first = subprocess.Popen(
        [sys.executable, "-m", "dsv4patch", "apply", *trees.args],
        env={**base, "TMPDIR": str(tmp_path / "tmp-a"),
             "DSV4PATCH_TEST_PAUSE_AT": "locked", "DSV4PATCH_TEST_SIGNAL": "STOP"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_stopped(first)
        other = {**base, "TMPDIR": str(tmp_path / "tmp-b"), "DSV4PATCH_LOCK_WAIT": "0.5"}
        second = subprocess.run([sys.executable, "-m", "dsv4patch", "apply",
                                 *trees.args], env=other, capture_output=True,
                                text=True, timeout=120)
        # A reader waits for the live run instead of calling it interrupted.
        status = subprocess.run([sys.executable, "-m", "dsv4patch", "status",
                                 *trees.args], env=other, capture_output=True,
                                text=True, timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    first.communicate(timeout=120)

    assert second.returncode == 1 and "holds the lock" in second.stderr
    assert status.returncode == 1 and "holds the lock" in status.stderr
    assert "interrupted" not in status.stdout
    assert first.returncode == 0
    final = cli.run("status", "--json", *trees.args, series=full_series)
    assert [t["state"] for t in json.loads(final.stdout)["trees"]] == ["applied"] * 2


@pytest.mark.parametrize("command", ["apply", "revert"])
def test_sigterm_before_any_change_exits_130(command: str, tmp_path: Path,
                                             full_series: Path,
                                             lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    if command == "revert":
        assert cli.run("apply", *trees.args, series=full_series,
                       lock_dir=lock_dir).returncode == 0
    before = trees.digests()
    # Both commands pass `locked` before they plan or change anything.
    result = cli.run(command, *trees.args, series=full_series, lock_dir=lock_dir,
                     env={"DSV4PATCH_TEST_PAUSE_AT": "locked",
                          "DSV4PATCH_TEST_SIGNAL": "TERM"})

    assert result.returncode == 130, result.stderr
    assert "Interrupted by SIGTERM" in result.stderr
    assert trees.digests() == before
