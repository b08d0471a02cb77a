"""`dsv4patch verify` on trees patched by `dsv4patch apply`, whole and damaged.

Each verify run starts the target Python three or four times and imports the
patched vLLM serving modules (~20 s here), so the damage cases share one run
per damaged copy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import cli
from tests.support.trees import REPO

TOOL_PARSER = "vllm/tool_parsers/deepseekv4_tool_parser.py"
VALUES = "vllm/tool_parsers/deepseekv4_values.py"
DSML = "vllm/tool_parsers/deepseekv4_dsml.py"


@pytest.fixture(scope="module")
def patched(tmp_path_factory: pytest.TempPathFactory) -> cli.Trees:
    trees = cli.make_trees("plain", tmp_path_factory.mktemp("verify"))
    done = cli.run("-q", "apply", *trees.args)
    assert done.returncode == 0, done.stderr
    return trees


def copy_of(trees: cli.Trees, dest: Path) -> cli.Trees:
    """A second patched pair, journal included, to damage."""
    copy = cli.Trees(dest / "vllm", dest / "vllm-ascend")
    shutil.copytree(trees.vllm, copy.vllm, symlinks=True)
    shutil.copytree(trees.ascend, copy.ascend, symlinks=True)
    return copy


def verify(trees: cli.Trees, *extra: str) -> tuple[int, dict, str]:
    done = cli.run("verify", *trees.args, "--json", *extra)
    report = json.loads(done.stdout)
    return done.returncode, report, done.stderr


def checks(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


def test_passes_on_a_patched_tree(patched: cli.Trees) -> None:
    before = patched.digests()
    code, report, stderr = verify(patched)

    assert code == 0, stderr
    assert report["state"] == "verified"
    assert report["python"] == sys.executable
    rows = checks(report)
    for name in ("vllm journal", "vllm hashes", "vllm leftovers", "vllm-ascend journal",
                 "compile", "import", "golden"):
        assert rows[name]["state"] == "pass", rows[name]
    assert "21 patched vLLM modules import" in rows["import"]["detail"]
    assert "text and token ids" in rows["golden"]["detail"]
    assert "whole and streamed" in rows["golden"]["detail"]
    # No Ascend stack here: the plugin is skipped with the reason, not failed.
    assert rows["vllm-ascend plugin"]["state"] == "skip"
    assert "torch_npu is not installed" in rows["vllm-ascend plugin"]["detail"]
    # vllm-ascend reassigns ModelConfig.is_deepseek_mla; patch 0001 edits that module.
    assert rows["runtime overrides"]["state"] == "warn"
    assert any("vllm.config.model" in p and "patch_model_config.py" in p
               for p in rows["runtime overrides"]["problems"])
    # Verify reads only: no bytecode, no scratch files left in the trees.
    assert patched.digests() == before


def test_text_report_has_one_line_per_check(tmp_path: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    done = cli.run("verify", *trees.args)

    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0].startswith("FAIL  vllm journal ")
    assert "is not patched" in lines[0]
    assert lines[-2].startswith("SKIP  code ")
    assert lines[-1].endswith(": failed")
    assert done.stderr == ("Error: 2 of 3 checks failed: vllm journal, vllm-ascend "
                           "journal\nhint: apply the series with `dsv4patch apply`, "
                           "then verify again\n")


def test_syntax_error_and_lost_file_name_the_file_and_module(
        patched: cli.Trees, tmp_path: Path) -> None:
    trees = copy_of(patched, tmp_path)
    with open(trees.vllm / VALUES, "a") as f:
        f.write("\ndef broken(:\n    pass\n")
    (trees.vllm / DSML).unlink()
    code, report, stderr = verify(trees)

    assert code == 1
    rows = checks(report)
    assert rows["vllm hashes"]["problems"] == [DSML, VALUES]
    assert f"{trees.vllm / DSML}: FileNotFoundError" in rows["compile"]["detail"]
    assert rows["compile"]["state"] == "fail"
    assert f"{trees.vllm / VALUES}: SyntaxError" in rows["compile"]["detail"]
    assert "vllm.tool_parsers.deepseekv4_values" in rows["import"]["detail"]
    assert rows["import"]["state"] == "fail"
    assert "Error: " in stderr and "compile" in stderr and "import" in stderr


def test_semantic_break_and_merge_debris(patched: cli.Trees,
                                                tmp_path: Path) -> None:
    # The tool parser would escape non-ASCII arguments: still compiles and imports.
    trees = copy_of(patched, tmp_path)
    source = trees.vllm / TOOL_PARSER
    text = source.read_text()
    good = "json.dumps(event[2], ensure_ascii=False)"
    assert good in text
    source.write_text(text.replace(good, "json.dumps(event[2], ensure_ascii=True)"))
    # Merge debris too; it breaks no code here, only the file checks see it.
    doc = "docs/source/tutorials/DeepSeek-V4.md"
    with open(trees.ascend / doc, "a") as f:
        f.write("<<<<<<< ours\nserve\n=======\nserve --flag\n>>>>>>> theirs\n")
    (trees.vllm / (TOOL_PARSER + ".rej")).write_text("@@ rejected hunk\n")
    code, report, _ = verify(trees)

    assert code == 1
    rows = checks(report)
    assert rows["compile"]["state"] == rows["import"]["state"] == "pass"
    assert rows["golden"]["state"] == "fail"
    [problem] = rows["golden"]["problems"]
    assert problem.startswith("parsers out9_thinking_unicode_and_empty_invoke: "
                              "vllm.tool_parsers.deepseekv4_tool_parser (whole)")
    assert rows["vllm hashes"]["problems"] == [TOOL_PARSER]
    assert rows["vllm leftovers"]["problems"] == [f"{TOOL_PARSER}.rej: stray file"]
    [marker] = rows["vllm-ascend leftovers"]["problems"]
    assert marker.startswith(f"{doc}:") and marker.endswith(": conflict marker")
    assert rows["vllm-ascend hashes"]["problems"] == [doc]


def test_stale_bytecode_python_never_checks_is_named(patched: cli.Trees,
                                                     tmp_path: Path) -> None:
    # Bytecode of the original registry in unchecked-hash mode: Python loads it
    # without looking at the patched source, so the server would run old code.
    trees = copy_of(patched, tmp_path)
    rel = "vllm/tokenizers/registry.py"
    source = trees.vllm / rel
    stale = Path(importlib.util.cache_from_source(str(source)))
    original = tmp_path / "registry.py"
    shutil.copy(cli.trees.pristine_tree("vllm") / rel, original)
    py_compile.compile(str(original), cfile=str(stale), doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    # Bytecode that does match the patched source is fine in any mode.
    fresh = Path(importlib.util.cache_from_source(str(trees.vllm / VALUES)))
    py_compile.compile(str(trees.vllm / VALUES), cfile=str(fresh), doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)

    code, report, _ = verify(trees)

    assert code == 1
    assert checks(report)["vllm leftovers"]["problems"] == [
        f"{stale.relative_to(trees.vllm)}: stale bytecode Python never checks "
        "against the source"]


def test_fails_on_an_unpatched_tree(tmp_path: Path) -> None:
    trees = cli.make_trees("plain", tmp_path)
    code, report, stderr = verify(trees)

    assert code == 1
    rows = checks(report)
    assert rows["vllm journal"]["state"] == "fail"
    assert "is not patched" in rows["vllm journal"]["detail"]
    assert "dsv4patch apply" in rows["vllm journal"]["detail"]
    assert rows["code"]["state"] == "skip"
    assert "vllm journal" in stderr


def test_a_tree_with_native_support_is_named_so(tmp_path: Path) -> None:
    # The later vllm-ascend deepseekv4 images patch vLLM at runtime themselves.
    trees = cli.make_trees("plain", tmp_path)
    runtime = trees.ascend / "vllm_ascend/patch/worker/patch_deepseek_v4_mla.py"
    runtime.write_text("# DeepSeek-V4 runtime patch\n")
    code, report, _ = verify(trees)

    assert code == 1
    detail = checks(report)["vllm-ascend journal"]["detail"]
    assert detail.startswith("the series is not applied, and not needed: ")
    assert "patch_deepseek_v4_mla.py" in detail


def test_target_python_is_the_one_named(patched: cli.Trees, tmp_path: Path) -> None:
    # The machine's own python3.11 has neither torch nor vLLM's dependencies:
    # the code checks run there, so the imports fail and say what is missing.
    python = shutil.which("python3.11", path="/usr/bin:/usr/local/bin") or (
        shutil.which("python3.11"))
    assert python, "python3.11 is needed for this test"
    code, report, _ = verify(patched, "--python", python)

    assert report["python"] == python
    rows = checks(report)
    assert rows["compile"]["state"] == "pass"
    assert rows["import"]["state"] == "fail"
    assert "ModuleNotFoundError" in rows["import"]["detail"]
    assert code == 1


def test_missing_target_python_is_refused(patched: cli.Trees, tmp_path: Path) -> None:
    done = cli.run("verify", *patched.args,
                   env={"DSV4PATCH_PYTHON": str(tmp_path / "no-python")})
    assert done.returncode == 1
    assert f"the target Python {tmp_path / 'no-python'} is not an executable" \
        in done.stderr
    assert "--python PATH or $DSV4PATCH_PYTHON" in done.stderr


def test_a_relative_target_python_is_taken_from_the_callers_directory(
        patched: cli.Trees) -> None:
    # The checks run in a scratch directory: a relative path must not be
    # looked up there.
    here = Path(sys.executable).parent
    done = subprocess.run(
        [sys.executable, "-m", "dsv4patch", "verify", *patched.args, "--json",
         "--python", f"./{Path(sys.executable).name}"],
        cwd=here, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)})

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["python"] == str(here / Path(sys.executable).name)


def plugin_step(trees: cli.Trees, extra_path: Path, tmp_path: Path) -> dict:
    """target_checks.py's plugin step alone, as verify runs it."""
    out = tmp_path / "rows.json"
    path = [str(trees.ascend), str(trees.vllm), str(extra_path)]
    done = subprocess.run(
        [sys.executable, str(REPO / "dsv4patch" / "target_checks.py"), "plugin",
         str(out), str(trees.ascend), str(trees.vllm)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(path),
             "VLLM_LOGGING_LEVEL": "WARNING"},
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [row] = json.loads(out.read_text())
    return row


def test_plugin_without_the_npu_libraries_is_skipped(patched: cli.Trees,
                                                    tmp_path: Path) -> None:
    # torch_npu installed, but its native libraries cannot load (no driver).
    fake = tmp_path / "site"
    (fake / "torch_npu").mkdir(parents=True)
    (fake / "torch_npu" / "__init__.py").write_text(
        "raise ImportError('libascend_hal.so: cannot open shared object file')\n")
    row = plugin_step(patched, fake, tmp_path)

    assert row["state"] == "skip", row
    assert "libascend_hal.so" in row["detail"]
    assert "torch_npu/__init__.py" in row["detail"]


def test_plugin_broken_inside_the_tree_fails(patched: cli.Trees,
                                             tmp_path: Path) -> None:
    trees = copy_of(patched, tmp_path / "copy")
    platform = trees.ascend / "vllm_ascend" / "platform.py"
    platform.write_text("from vllm_ascend.no_such_helper import thing\n"
                        + platform.read_text())
    row = plugin_step(trees, tmp_path, tmp_path)

    assert row["state"] == "fail", row
    assert "vllm_ascend.no_such_helper" in row["detail"]
