"""`make ci-images` (tools/ci_images.py): one variant end to end from a freshly built
wheel, and the checks it shares with the workflow rejecting what they must."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import trees
from tools import ci_images

REPO = Path(__file__).resolve().parent.parent
VARIANT = "v0.13.0rc3-a3-openeuler"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "--wheel-dir", str(dist),
                    str(REPO)], check=True, capture_output=True)
    [built] = dist.glob("dsv4patch-*.whl")
    return built


def local_run(wheel: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, str(REPO / "tools" / "ci_images.py"),
                           "--variant", VARIANT, "--wheel", str(wheel),
                           "--out", str(out), *args],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def run(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The local image run of one variant, with a wheel built for this test."""
    out = tmp_path_factory.mktemp("out")
    return {"result": local_run(wheel, out), "out": out}


def test_one_variant_passes_with_one_summary_line(run: dict) -> None:
    result = run["result"]
    lines = result.stdout.splitlines()

    assert result.returncode == 0, result.stdout + result.stderr
    assert [line.split()[:2] for line in lines if line.startswith("v0.13.0rc3")] \
        == [[VARIANT, "ok"]]
    summary = next(line for line in lines if line.startswith(VARIANT))
    assert " check apply verify status revert " in summary
    assert summary.endswith(" s")
    assert lines[0].startswith("environment: Python 3.11")
    assert "xgrammar" in lines[0] and "transformers" in lines[0]


def test_the_saved_status_documents_name_the_variant(run: dict) -> None:
    applied = json.loads((run["out"] / f"status-{VARIANT}.json").read_text())
    reverted = json.loads((run["out"] / f"status-{VARIANT}-reverted.json").read_text())

    assert applied["image"]["image"] == reverted["image"]["image"] == VARIANT
    assert ci_images.status_problems(applied, "applied", VARIANT) == []
    assert ci_images.status_problems(reverted, "pristine", VARIANT) == []
    log = (run["out"] / f"{VARIANT}.log").read_text()
    assert "/wheel/bin/dsv4patch verify --root " in log


def test_the_status_checks_reject_the_wrong_state_and_variant(run: dict) -> None:
    applied = json.loads((run["out"] / f"status-{VARIANT}.json").read_text())

    assert any("state is 'applied'" in p
               for p in ci_images.status_problems(applied, "pristine", VARIANT))
    assert any("the image is" in p
               for p in ci_images.status_problems(applied, "applied", "v0.13.0rc3-a3"))


def test_the_status_checks_reject_an_edited_file_and_drift(run: dict) -> None:
    applied = json.loads((run["out"] / f"status-{VARIANT}.json").read_text())
    reverted = json.loads((run["out"] / f"status-{VARIANT}-reverted.json").read_text())
    edited, drifted = copy.deepcopy(applied), copy.deepcopy(reverted)
    vllm = next(t for t in edited["trees"] if t["name"] == "vllm")
    path = sorted(vllm["files"])[0]
    vllm["files"][path] = "edited after apply"
    ascend = next(t for t in drifted["trees"] if t["name"] == "vllm-ascend")
    ascend["drift"]["differences"].append({"path": "setup.py", "code": "5",
                                           "blocking": False})

    assert ci_images.status_problems(edited, "applied", VARIANT) == [
        f"vllm: {path} is 'edited after apply', expected patched"]
    assert ci_images.status_problems(drifted, "pristine", VARIANT) == [
        "vllm-ascend: drift from the base: 5 setup.py"]


def test_assert_status_exits_non_zero_on_a_wrong_document(run: dict) -> None:
    saved = run["out"] / f"status-{VARIANT}.json"
    command = [sys.executable, str(REPO / "tools" / "ci_images.py"), "assert-status",
               "--variant", VARIANT, str(saved)]

    good = subprocess.run([*command[:3], "--state", "applied", *command[3:]],
                          capture_output=True, text=True)
    bad = subprocess.run([*command[:3], "--state", "pristine", *command[3:]],
                         capture_output=True, text=True)

    assert good.returncode == 0, good.stderr
    assert bad.returncode == 1
    assert "expected 'not applied'" in bad.stderr


def test_a_variant_that_fails_gives_a_failed_line_and_exit_1(
        wheel: Path, tmp_path: Path) -> None:
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    for tree in ("vllm", "vllm-ascend"):
        subprocess.run(["cp", "-al", str(trees.pristine_tree(tree)),
                        str(pristine / tree)], check=True)
    edited = pristine / "vllm" / "vllm" / "entrypoints" / "openai" / "serving_chat.py"
    text = edited.read_text()
    edited.unlink()  # not through the link into the real pristine tree
    edited.write_text(text + "# a local edit\n")

    result = local_run(wheel, tmp_path / "out", "--pristine", str(pristine))

    assert result.returncode == 1
    [summary] = [line for line in result.stdout.splitlines()
                 if line.startswith(VARIANT)]
    assert summary.split()[:3] == [VARIANT, "FAILED", "-"]
    assert "check exited 1" in result.stderr
    log = (tmp_path / "out" / f"{VARIANT}.log").read_text()
    assert "vllm/entrypoints/openai/serving_chat.py" in log


@pytest.fixture
def laid(tmp_path: Path) -> tuple[Path, Path]:
    """A small pristine tree and a fake-root copy laid the way the run lays one."""
    pristine, copied = tmp_path / "pristine", tmp_path / "copy"
    (pristine / "pkg").mkdir(parents=True)
    for name in ("written.py", "linked.py", "other.py"):
        (pristine / "pkg" / name).write_text(f"# {name}\n")
    subprocess.run(["cp", "-al", str(pristine), str(copied)], check=True)
    (copied / "pkg" / "_build_info.py").write_text("__device_type__ = 'A3'\n")
    return pristine, copied


def test_the_tree_check_passes_an_untouched_copy(laid: tuple[Path, Path]) -> None:
    pristine, copied = laid
    state = ci_images.copy_written(pristine, copied, {"pkg/written.py"})
    (copied / "pkg" / "__pycache__").mkdir()
    (copied / "pkg" / "__pycache__" / "written.cpython-311.pyc").write_bytes(b"x")

    assert ci_images.tree_differences(pristine, copied, state) == []
    assert set(state.links) == {"pkg/linked.py", "pkg/other.py"}
    assert not (copied / "pkg" / "written.py").samefile(pristine / "pkg" / "written.py")


def test_the_tree_check_finds_every_kind_of_difference(
        laid: tuple[Path, Path]) -> None:
    pristine, copied = laid
    state = ci_images.copy_written(pristine, copied, {"pkg/written.py"})
    (copied / "pkg" / "written.py").write_text("# changed\n")
    with open(copied / "pkg" / "linked.py", "a") as through_the_link:
        through_the_link.write("# appended\n")
    (copied / "pkg" / "other.py").unlink()
    (copied / "pkg" / "new.py").write_text("")
    (copied / "pkg" / "_build_info.py").write_text("__device_type__ = 'A2'\n")

    assert ci_images.tree_differences(pristine, copied, state) == [
        "added pkg/new.py", "missing pkg/other.py", "differs pkg/_build_info.py",
        "written outside the series' files pkg/linked.py", "differs pkg/written.py"]


def test_the_image_pins_come_from_vllm_ascend_requirements() -> None:
    pins = ci_images.image_pins(trees.pristine_tree("vllm-ascend"))

    assert set(pins) == {"transformers", "fastapi", "xgrammar"}
    assert ci_images.lowest(pins["xgrammar"]) is not None
    assert "<0.124" in pins["fastapi"]


def test_an_unmet_pin_installs_what_the_fake_root_declares() -> None:
    from tests.support import fakeroot

    assert ci_images.image_requirement("xgrammar", ">=0.1.30") \
        == f"xgrammar=={fakeroot.PACKAGES['xgrammar']}"
    assert ci_images.image_requirement("xgrammar", ">=99") == "xgrammar==99"
    assert ci_images.image_requirement("unlisted", "<2,>=1.5") == "unlisted==1.5"
    assert ci_images.image_requirement("unlisted", "<2") == "unlisted<2"


def test_the_footprint_is_what_the_patches_name() -> None:
    vllm = ci_images.footprint("vllm")

    assert "vllm/entrypoints/openai/serving_chat.py" in vllm
    assert "docs/source/tutorials/DeepSeek-V4.md" in ci_images.footprint("vllm-ascend")
    assert not any(path.startswith("/dev/null") for path in vllm)
