"""Session set-up: one vLLM tree patched by `dsv4patch apply`, first on sys.path.

Everything in the suite that imports `vllm` gets that tree. The venv holds vLLM
0.13.0 installed editable exactly as the images do; putting the patched copy first
on sys.path is the same mechanism the editable install uses, pointed at a tree
that this session patched itself.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.harness.launch import PATCHED_FLAGS, HarnessServer
from tests.support import trees

_patched: dict[str, object] = {}


def pytest_configure(config: pytest.Config) -> None:
    if "vllm" in sys.modules:
        raise pytest.UsageError("vllm was imported before the patched tree was set up")
    if not (trees.SHARED / "golden").is_dir():
        raise pytest.UsageError(
            f"the shared reference data is missing at {trees.SHARED}: put the "
            "shared/ directory beside the checkout or set DSV4PATCH_SHARED"
        )
    root = Path(tempfile.mkdtemp(prefix="dsv4patch-session-"))
    _patched["root"] = root
    try:
        vllm, vllm_ascend = trees.build_patched_trees(root)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        _patched["error"] = f"patched trees unavailable: {exc} {detail}".strip()
        return
    _patched["vllm"], _patched["vllm-ascend"] = vllm, vllm_ascend
    sys.path.insert(0, str(vllm))


def pytest_unconfigure(config: pytest.Config) -> None:
    root = _patched.get("root")
    if isinstance(root, Path):
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def patched_vllm() -> Path:
    """The session's vLLM tree, patched by `dsv4patch apply`."""
    if "error" in _patched:
        pytest.fail(str(_patched["error"]))
    return _patched["vllm"]  # type: ignore[return-value]


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DeepSeek-V4 model directory with the real tokenizer.json."""
    return trees.model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def server(patched_vllm: Path, model_path: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[HarnessServer]:
    """The harness server on the launch line, one per test module."""
    log = tmp_path_factory.mktemp("e2e") / "server.log"
    with HarnessServer(model_path, PATCHED_FLAGS, log, vllm_tree=patched_vllm) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: HarnessServer) -> openai.OpenAI:
    """The real openai client, pointed at the module's harness server."""
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
