"""The same harness on v0.13.0 without the series must fail the way operators saw.

A pristine tree cannot even accept `--tokenizer-mode deepseek_v4`. The closest it
can run is its own DeepSeek-V3.2 tokenizer mode and parsers on the same MTP plus
async scheduling line; against that server the operator checks must fail, and
`dsv4patch probe` must exit non-zero. This is what proves the harness can tell.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsv4patch import probe
from tests.harness.launch import (
    MODEL_NAME,
    PATCHED_FLAGS,
    UNPATCHED_FLAGS,
    HarnessServer,
)
from tests.support import trees

REPO = Path(__file__).resolve().parents[1]
# Importing from the read-only pristine tree must not leave bytecode in it.
NO_BYTECODE = {"PYTHONDONTWRITEBYTECODE": "1"}


@pytest.fixture(scope="module")
def unpatched(model_path: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[HarnessServer]:
    log = tmp_path_factory.mktemp("unpatched") / "server.log"
    server = HarnessServer(model_path, UNPATCHED_FLAGS, log,
                           vllm_tree=trees.pristine_tree("vllm"), extra_env=NO_BYTECODE)
    with server:
        yield server


def test_pristine_tree_rejects_the_deepseek_v4_tokenizer_mode(
        model_path: Path, tmp_path: Path) -> None:
    server = HarnessServer(model_path, PATCHED_FLAGS, tmp_path / "server.log",
                           vllm_tree=trees.pristine_tree("vllm"), extra_env=NO_BYTECODE)

    with pytest.raises(RuntimeError, match="exited"):
        server.start()

    assert "deepseek_v4" in server.log_tail()


def test_operator_checks_fail_on_the_unpatched_server(
        unpatched: HarnessServer) -> None:
    checks = {c.name: c for c in probe.run(unpatched.url, MODEL_NAME, None, 60.0)}

    for name in ("tool-choice-required", "tool-choice-required-streamed",
                 "tool-choice-named", "tool-choice-named-streamed"):
        assert not checks[name].passed
        assert "async scheduling" in checks[name].detail or (
            "HTTP 400" in checks[name].detail), checks[name].detail
    # v0.13.0's request model knows no "max" effort.
    assert not checks["thinking-max"].passed
    assert "reasoning_effort" in checks["thinking-max"].detail
    assert checks["plain-answer"].passed, "the harness itself must still answer"


def test_probe_command_exits_non_zero(unpatched: HarnessServer) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dsv4patch", "probe", "--url", unpatched.url + "/v1",
         "--model", MODEL_NAME, "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )

    assert result.returncode == 1, result.stderr
    assert '"passed": false' in result.stdout
    assert "probe checks failed" in result.stderr
