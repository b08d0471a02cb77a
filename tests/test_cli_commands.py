"""check, status, drift, probe and the conventions every command shares."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dsv4patch import render
from dsv4patch.probe import Check
from tests.support import cli
from tests.support.fixtures import fixture_full_series, fixture_lock_dir  # noqa: F401

PACKAGE = Path(cli.trees.REPO) / "dsv4patch"


def test_check_names_the_conflicting_file_and_hunk(tmp_path: Path,
                                                   full_series: Path,
                                                   lock_dir: Path) -> None:
    trees = cli.make_trees("inside-repo", tmp_path)
    (rel,) = cli.paths_of((full_series / "9002-test-ascend.patch").read_bytes())
    target = trees.ascend / rel
    lines = target.read_text().splitlines(keepends=True)
    lines[-2] = "# changed locally\n"
    target.write_text("".join(lines))
    before = trees.digests()

    result = cli.run("check", "--json", *trees.args, series=full_series,
                     lock_dir=lock_dir)

    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["state"] == "blocked"
    ascend = report["trees"][1]
    assert "local edits" in ascend["problem"] and rel in ascend["problem"]
    outcome = {o["patch"]: o for o in ascend["patches"]}["9002-test-ascend.patch"]
    assert outcome["state"] == "conflicts"
    assert re.search(rf"{re.escape(rel)}: hunk #1 at line \d+", outcome["problems"][0])
    assert [o["state"] for o in report["trees"][0]["patches"]] == \
        ["applies"] * len(report["trees"][0]["patches"])
    assert trees.digests() == before


@pytest.mark.parametrize("shape", cli.SHAPES)
def test_check_is_cumulative_and_changes_nothing(shape: str, tmp_path: Path,
                                                 full_series: Path,
                                                 lock_dir: Path) -> None:
    trees = cli.make_trees(shape, tmp_path)
    before = trees.digests()
    fresh = cli.run("check", *trees.args, series=full_series, lock_dir=lock_dir)
    assert fresh.returncode == 0 and fresh.stdout.endswith("applies\n")
    assert trees.digests() == before

    assert cli.run("apply", *trees.args, series=full_series,
                   lock_dir=lock_dir).returncode == 0
    applied = cli.run("check", "--json", *trees.args, series=full_series,
                      lock_dir=lock_dir)
    assert applied.returncode == 0
    assert json.loads(applied.stdout)["state"] == "already applied"


def test_status_tells_partly_applied_patches_and_files(tmp_path: Path,
                                                       full_series: Path,
                                                       lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    assert cli.run("apply", *trees.args, series=full_series,
                   lock_dir=lock_dir).returncode == 0
    marker = trees.vllm / "vllm/dsv4patch_test/marker.py"
    marker.unlink()

    status = json.loads(cli.run("status", "--json", *trees.args, series=full_series,
                                lock_dir=lock_dir).stdout)
    vllm = status["trees"][0]
    assert vllm["patches"]["9001-test-vllm.patch"] == "partly applied"
    assert vllm["files"]["vllm/dsv4patch_test/marker.py"] == "original"
    assert vllm["applied_series"] == "0.0.0-test" and vllm["state"] == "partly applied"
    assert status["trees"][1]["state"] == "applied"

    before = trees.digests()
    again = cli.run("apply", *trees.args, series=full_series, lock_dir=lock_dir)
    assert again.returncode == 1 and "partly applied" in again.stderr
    assert trees.digests() == before


def test_status_without_journal_reports_a_partial_series(tmp_path: Path,
                                                         full_series: Path,
                                                         lock_dir: Path) -> None:
    entries, sources = cli.real_entries()
    subset = cli.write_series(tmp_path / "subset", [
        {"file": "9001-test-vllm.patch", "tree": "vllm", "description": "t",
         "origin": "tests"}], {"9001-test-vllm.patch":
                               (full_series / "9001-test-vllm.patch").read_bytes()})
    trees = cli.make_trees("plain", tmp_path)
    assert cli.run("apply", *trees.args, series=subset,
                   lock_dir=lock_dir).returncode == 0
    shutil.rmtree(trees.vllm / ".dsv4patch")

    status = json.loads(cli.run("status", "--json", *trees.args, series=full_series,
                                lock_dir=lock_dir).stdout)

    vllm = status["trees"][0]
    assert vllm["journal"] == "none"
    assert vllm["patches"]["9001-test-vllm.patch"] == "already applied"
    assert set(vllm["patches"].values()) - {"already applied"} == {"not applied"} \
        or len(entries) == 0
    assert vllm["state"] == ("partly applied" if any(
        e["tree"] == "vllm" for e in entries) else "applied without a journal")


def test_drift_reports_against_the_recorded_base(tmp_path: Path,
                                                 full_series: Path,
                                                 lock_dir: Path) -> None:
    trees = cli.make_trees("git-clone", tmp_path)
    clean = cli.run("drift", "--json", *trees.args, series=full_series,
                    lock_dir=lock_dir)
    assert clean.returncode == 0, clean.stderr
    assert all(t["differences"] == [] for t in json.loads(clean.stdout)["trees"])

    assert cli.run("apply", *trees.args, series=full_series,
                   lock_dir=lock_dir).returncode == 0
    (trees.vllm / "README.md").write_text("changed\n")
    (trees.vllm / "vllm/__pycache__").mkdir(exist_ok=True)
    (trees.vllm / "vllm/__pycache__/envs.cpython-311.pyc").write_bytes(b"x")
    (trees.vllm / "vllm/extra_module.py").write_text("")
    (trees.ascend / "setup.py").unlink()

    result = cli.run("drift", "--json", *trees.args, series=full_series,
                     lock_dir=lock_dir)

    assert result.returncode == 0, result.stderr  # only non-blocking drift
    vllm, ascend = json.loads(result.stdout)["trees"]
    assert {(d["path"], d["code"]) for d in vllm["differences"]} == {
        ("README.md", "5"), ("vllm/extra_module.py", "added")}
    assert vllm["expected_patched"] == len(
        json.loads((trees.vllm / ".dsv4patch/journal.json").read_text())["files"])
    assert [(d["path"], d["code"]) for d in ascend["differences"]] == \
        [("setup.py", "missing")]

    (trees.vllm / "vllm/dsv4patch_test/marker.py").write_text("edited\n")
    blocking = cli.run("drift", *trees.args, series=full_series, lock_dir=lock_dir)
    assert blocking.returncode == 1 and "BLOCKING" in blocking.stdout


def test_verbose_shows_the_git_commands(tmp_path: Path,
                                        full_series: Path,
                                        lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    verbose = cli.run("check", "-v", *trees.args, series=full_series,
                      lock_dir=lock_dir)
    assert "git apply --verbose --whitespace=nowarn -" in verbose.stderr
    quiet = cli.run("-q", "apply", *trees.args, series=full_series, lock_dir=lock_dir)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_json_keeps_the_failing_exit_code(tmp_path: Path,
                                          full_series: Path,
                                          lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    (trees.vllm / "vllm/_version.py").write_text("__version__ = '0.11.0'\n")
    result = cli.run("check", "--json", *trees.args, series=full_series,
                     lock_dir=lock_dir)
    assert result.returncode == 1
    assert "0.11.0" in json.loads(result.stdout)["trees"][0]["problem"]

    refused = cli.run("apply", "--json", *trees.args, series=full_series,
                      lock_dir=lock_dir)
    assert refused.returncode == 1
    document = json.loads(refused.stdout)
    assert "0.11.0" in document["error"] and document["hint"]


def test_usage_errors_exit_2(full_series: Path) -> None:
    assert cli.run("apply", "--no-such-option", series=full_series).returncode == 2
    assert cli.run("no-such-command", series=full_series).returncode == 2


# A fault nothing in the tool plans for: every odd file a tree can hold is
# refused cleanly, so the fault is injected into the running command.
CRASH = """
import sys
from dsv4patch import cli, status
def fault(*args, **kwargs):
    raise IsADirectoryError(21, "Is a directory", "vllm/envs.py")
status.run = fault
sys.argv = ["dsv4patch", *sys.argv[1:]]
cli.main()
"""


def crash(args: list[str], log_dir: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cli.trees.REPO),
           "DSV4PATCH_LOG_DIR": log_dir}
    return subprocess.run([sys.executable, "-c", CRASH, "status", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_internal_errors_exit_3_with_a_log(tmp_path: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    result = crash(trees.args, str(tmp_path))
    assert result.returncode == 3
    log = Path(result.stderr.strip().split(" is in ")[-1])
    assert log.parent == tmp_path and "IsADirectoryError" in log.read_text()

    # An unusable log directory falls back to the temp directory, still exit 3.
    fallback = crash(trees.args, "/nonexistent/x")
    assert fallback.returncode == 3 and "Traceback" not in fallback.stderr
    Path(fallback.stderr.strip().split(" is in ")[-1]).unlink()


@pytest.mark.parametrize("variable, value", [
    ("DSV4PATCH_LOCK_WAIT", "abc"), ("DSV4PATCH_LOCK_DIR", "/etc/hostname"),
    ("DSV4PATCH_TEST_SIGNAL", "BOGUS"), ("DSV4PATCH_TEST_PAUSE_AT", "nowhere")])
def test_bad_environment_values_are_refused(variable: str, value: str,
                                            tmp_path: Path,
                                            full_series: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    env = {"DSV4PATCH_LOCK_DIR": str(tmp_path / "locks"), variable: value}
    before = trees.digests()
    result = cli.run("apply", *trees.args, series=full_series, env=env)
    assert result.returncode == 1, result.stderr
    assert variable in result.stderr or value in result.stderr
    assert "hint: " in result.stderr and trees.digests() == before


@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_file_given_as_a_tree_is_refused(how: str, tmp_path: Path,
                                           full_series: Path,
                                           lock_dir: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x\n")
    args, env = (["--vllm", str(not_a_dir)], {}) if how == "option" else \
        ([], {"DSV4PATCH_VLLM": str(not_a_dir)})
    result = cli.run("status", *args, series=full_series, lock_dir=lock_dir, env=env)
    assert result.returncode == 1 and "is not a directory" in result.stderr


def test_empty_series_is_nothing_to_do(tmp_path: Path) -> None:
    series = cli.write_series(tmp_path / "series", [], {})
    result = cli.run("apply", "--vllm", str(tmp_path / "absent"), series=series)
    assert result.returncode == 0 and "nothing to do" in result.stdout


def test_probe_table_from_real_checks() -> None:
    checks = [Check("plain", True, "323"),
              Check("thinking-high", False, "no reasoning")]
    table = render.probe_table(checks)
    assert table.splitlines()[1].split()[:2] == ["plain", "pass"]
    assert table.splitlines()[2].split()[:2] == ["thinking-high", "FAIL"]
    assert table.endswith("1/2 checks passed")
    assert json.loads(render.probe_json(checks))["passed"] is False


def test_probe_against_a_closed_local_port_fails_every_check() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = cli.run("probe", "--url", f"http://127.0.0.1:{port}", "--model", "m",
                     "--timeout", "2", "--json")
    assert result.returncode == 1
    rows = json.loads(result.stdout)["checks"]
    assert rows and not any(row["passed"] for row in rows)


def test_only_cli_imports_click_and_only_git_runs_programs() -> None:
    for module in PACKAGE.glob("*.py"):
        tree = ast.parse(module.read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, (ast.Import, ast.ImportFrom))
                    for alias in (node.names if isinstance(node, ast.Import)
                                  else [ast.alias(node.module or "")])}
        if module.name != "cli.py":
            assert "click" not in imported, module.name
        if module.name != "git.py":
            assert "subprocess" not in imported, module.name
        assert not re.search(r"\bprint\(", module.read_text()), module.name


def test_command_bodies_stay_thin() -> None:
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any(
                "command" in ast.unparse(d) for d in node.decorator_list):
            body = node.body[1:] if ast.get_docstring(node) else node.body
            assert node.end_lineno - body[0].lineno < 25, node.name


def test_wheel_carries_the_series(tmp_path: Path) -> None:
    # Build from a copy: setuptools writes build/ and *.egg-info into the source.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(cli.trees.REPO / name, source / name)
    for name in ("dsv4patch", "patches"):
        shutil.copytree(cli.trees.REPO / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__", ".series.lock"))
    built = subprocess.run(
        [cli.sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "-w", str(tmp_path), str(source)],
        capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    import zipfile

    (wheel,) = tmp_path.glob("dsv4patch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "dsv4patch/patches/series.toml" in names
    assert "dsv4patch/patches/bases/vllm-0.13.0.gitblob" in names
    assert "dsv4patch/patches/profiles/v0.13.0rc3-a3.toml" in names
    for entry in cli.real_entries()[0]:
        assert f"dsv4patch/patches/{entry['file']}" in names


def test_check_names_runtime_overrides_from_vllm_ascend(tmp_path: Path,
                                                         lock_dir: Path) -> None:
    # vllm_ascend/patch/platform/patch_model_config.py replaces this method.
    data = cli.header("touch is_deepseek_mla") + cli.append_patch(
        "vllm", "vllm/config/model.py", "# is_deepseek_mla also handles deepseek_v4")
    series = cli.write_series(tmp_path / "series", [
        {"file": "0001-mla.patch", "tree": "vllm", "description": "m",
         "origin": "tests"}], {"0001-mla.patch": data.encode()})
    trees = cli.make_trees("plain", tmp_path)

    result = cli.run("check", "--json", *trees.args, series=series, lock_dir=lock_dir)

    assert result.returncode == 0, result.stderr
    (note,) = json.loads(result.stdout)["notes"]
    assert "is_deepseek_mla" in note and "patch_model_config.py:" in note


def _one_patch_series(dest: Path, name: str, data: str) -> Path:
    return cli.write_series(dest, [{"file": name, "tree": "vllm", "description": "t",
                                    "origin": "tests"}], {name: data.encode()})


@pytest.mark.parametrize("case", ["edited after apply", "symlinked file",
                                  "does not compile"])
def test_check_gives_the_verdict_apply_would(case: str, tmp_path: Path,
                                             full_series: Path,
                                             lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    series = full_series
    rel = cli.paths_of((full_series / "9001-test-vllm.patch").read_bytes())[0]
    if case == "edited after apply":
        assert cli.run("apply", *trees.args, series=series,
                       lock_dir=lock_dir).returncode == 0
        # At the top, away from the patch's hunk, so the patch still looks applied.
        target = trees.vllm / rel
        target.write_text("# a local edit\n" + target.read_text())
    elif case == "symlinked file":
        target = trees.vllm / rel
        moved = trees.vllm / (rel + ".real")
        target.rename(moved)
        target.symlink_to(moved.name)
    else:
        series = _one_patch_series(tmp_path / "bad", "0001-bad.patch", cli.header(
            "syntax error") + cli.append_patch("vllm", rel, "def (:"))
    before = trees.digests()

    checked = cli.run("check", *trees.args, series=series, lock_dir=lock_dir)
    applied = cli.run("apply", *trees.args, series=series, lock_dir=lock_dir)

    assert applied.returncode == 1, applied.stderr
    assert checked.returncode == 1, checked.stdout
    assert "problem: " in checked.stdout
    assert trees.digests() == before


def test_a_section_before_the_first_diff_header_is_refused(tmp_path: Path,
                                                          lock_dir: Path) -> None:
    rel = cli.VLLM_EXTRA[0]
    sneaky = ("--- /dev/null\n+++ b/vllm/sneaky.py\n@@ -0,0 +1 @@\n+SNEAKY = 1\n")
    series = _one_patch_series(tmp_path / "series", "0001-sneaky.patch",
                               cli.header("hidden section") + sneaky
                               + cli.append_patch("vllm", rel, "# visible"))
    trees = cli.make_trees("plain", tmp_path)
    before = trees.digests()

    checked = cli.run("check", *trees.args, series=series, lock_dir=lock_dir)
    result = cli.run("apply", *trees.args, series=series, lock_dir=lock_dir)

    assert checked.returncode == 1 and "disagree" in checked.stderr
    assert result.returncode == 1 and "vllm/sneaky.py" in result.stderr
    assert "disagree" in result.stderr and trees.digests() == before


def test_a_patch_creating_a_symlink_is_refused(tmp_path: Path,
                                              lock_dir: Path) -> None:
    link = ("diff --git a/vllm/link b/vllm/link\nnew file mode 120000\n"
            "--- /dev/null\n+++ b/vllm/link\n@@ -0,0 +1 @@\n+/etc/hostname\n"
            "\\ No newline at end of file\n")
    series = _one_patch_series(tmp_path / "series", "0001-link.patch",
                               cli.header("symlink") + link)
    trees = cli.make_trees("plain", tmp_path)
    before = trees.digests()

    result = cli.run("apply", *trees.args, series=series, lock_dir=lock_dir)

    assert result.returncode == 1 and "120000" in result.stderr
    assert not (trees.vllm / "vllm/link").is_symlink()
    assert trees.digests() == before


def test_any_tag_at_head_may_name_the_base(tmp_path: Path, full_series: Path,
                                          lock_dir: Path) -> None:
    trees = cli.make_trees("git-clone", tmp_path)
    # Sorted first, so a tree judged by one tag alone was refused as 0.12.9.
    cli.git(trees.vllm, "tag", "v0.12.9")
    result = cli.run("apply", "--dry-run", *trees.args, series=full_series,
                     lock_dir=lock_dir)
    assert result.returncode == 0, result.stderr

    cli.git(trees.vllm, "tag", "-d", "v0.13.0")
    refused = cli.run("apply", "--dry-run", *trees.args, series=full_series,
                      lock_dir=lock_dir)
    assert refused.returncode == 1 and "0.12.9" in refused.stderr


def test_results_are_printed_once(tmp_path: Path, full_series: Path,
                                  lock_dir: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    for command in ("apply", "revert"):
        result = cli.run(command, *trees.args, series=full_series, lock_dir=lock_dir)
        assert result.returncode == 0, result.stderr
        assert str(trees.vllm) in result.stdout
        assert str(trees.vllm) not in result.stderr and "reverted" not in \
            result.stderr
