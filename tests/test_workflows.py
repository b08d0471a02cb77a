"""The GitHub workflow: it passes the lint, the lint catches a broken copy, and it
runs the steps the image-equivalent local run mirrors on exactly the four images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tools import ci_images

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / ".github" / "workflows" / "images.yml"
LINTER = Path(sys.executable).parent / "check-jsonschema"
IMAGES = [f"quay.io/ascend/vllm-ascend:{tag}" for tag in (
    "v0.13.0rc3", "v0.13.0rc3-openeuler", "v0.13.0rc3-a3", "v0.13.0rc3-a3-openeuler")]


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    """What `make lint-workflows` runs: the schema, then the references."""
    if not LINTER.exists():
        pytest.fail(f"{LINTER} is missing: `make lint-workflows` installs it")
    schema = subprocess.run([str(LINTER), "--builtin-schema",
                             "vendor.github-workflows", str(path)],
                            capture_output=True, text=True)
    if schema.returncode != 0:
        return schema
    return subprocess.run([sys.executable, str(REPO / "tools" / "lint_workflows.py"),
                           str(path)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_the_workflow_passes_the_lint() -> None:
    result = lint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("original, broken", [
    ("runs-on: ubuntu-latest", "runs_on: ubuntu-latest"),
    ("timeout-minutes: 60", "timeout-minutes: an hour"),
    ("contents: read", "contents: readonly"),
    ("      - uses: actions/checkout@v4", "      - use: actions/checkout@v4"),
    ("    steps:", "    steps: {}\n    not-steps:"),
    # Past the schema: references it cannot follow.
    ("  tests:\n", "  tests:\n    needs: imgae\n"),
    ("--variant \"${{ matrix.variant }}\" status.json",
     "--variant \"${{ matrix.varaint }}\" status.json"),
    ("uses: actions/upload-artifact@v4", "uses: actions/upload-artifact"),
])
def test_the_lint_fails_on_a_broken_copy(tmp_path: Path, original: str,
                                         broken: str) -> None:
    text = WORKFLOW.read_text()
    assert original in text
    copy = tmp_path / "images.yml"
    copy.write_text(text.replace(original, broken, 1))

    result = lint(copy)

    assert result.returncode != 0, result.stdout


def test_the_lint_fails_on_a_job_without_steps(tmp_path: Path) -> None:
    text = WORKFLOW.read_text()
    job = text.index("\n  tests:\n")
    copy = tmp_path / "images.yml"
    copy.write_text(text[:text.index("    steps:\n", job)])

    result = lint(copy)

    assert result.returncode != 0 and "no steps" in result.stderr, result.stdout


def test_the_matrix_names_exactly_the_four_images(workflow: dict) -> None:
    job = workflow["jobs"]["image"]
    tags = job["strategy"]["matrix"]["variant"]
    image = job["container"]["image"]

    assert sorted(image.replace("${{ matrix.variant }}", tag) for tag in tags) \
        == sorted(IMAGES)
    assert tuple(tags) == ci_images.VARIANTS
    assert job["strategy"]["fail-fast"] is False


def run_lines(job: dict) -> list[str]:
    return [line.strip() for step in job["steps"]
            for line in step.get("run", "").splitlines() if line.strip()]


def test_each_image_runs_the_steps_in_order(workflow: dict) -> None:
    lines = run_lines(workflow["jobs"]["image"])
    commands = [line.removeprefix("dsv4patch ").split(" >")[0] for line in lines
                if line.startswith("dsv4patch ") and line != "dsv4patch --version"]

    assert commands == ["check", "apply", "verify", "status --json", "revert",
                        "status --json"]
    assert any("pip install ./" in line for line in lines)


def test_each_image_asserts_what_the_local_run_asserts(workflow: dict) -> None:
    job = workflow["jobs"]["image"]
    lines = " ".join(run_lines(job)).replace("\\ ", " ")
    uploads = [s for s in job["steps"] if s.get("uses", "").startswith(
        "actions/upload-artifact@")]

    assert "tools/ci_images.py assert-status --state applied" in lines
    assert "tools/ci_images.py assert-status --state pristine" in lines
    assert [u["with"]["name"] for u in uploads] == ["status-${{ matrix.variant }}"]
    assert uploads[0]["with"]["path"] == "status.json"


def test_the_suite_job_runs_the_readme_test_command(workflow: dict) -> None:
    job = workflow["jobs"]["tests"]
    setup = [s for s in job["steps"] if s.get("uses", "").startswith(
        "actions/setup-python@")]

    assert job["runs-on"] == "ubuntu-latest"
    assert [s["with"]["python-version"] for s in setup] == ["3.11"]
    assert "make test" in run_lines(job)
    assert "make test" in (REPO / "README.md").read_text()


def test_permissions_pins_and_timeouts(workflow: dict) -> None:
    uses = [s["uses"] for job in workflow["jobs"].values() for s in job["steps"]
            if "uses" in s]

    assert workflow["permissions"] == {"contents": "read"}
    assert all("@v" in u and u.split("@v")[1][:1].isdigit() for u in uses), uses
    assert all(isinstance(job.get("timeout-minutes"), int)
               for job in workflow["jobs"].values())
