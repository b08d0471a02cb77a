"""Start and stop the harness server as a subprocess on 127.0.0.1.

Used by the end-to-end tests and by tools/demo.py. The launch flags mirror the
operators' `vllm serve` line; `PATCHED_FLAGS` is that line after `dsv4patch apply`,
`UNPATCHED_FLAGS` the closest a v0.13.0 tree without the series can take (its own
DeepSeek-V3.2 tokenizer mode and parsers), with the same MTP and async scheduling.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MODEL_NAME = "deepseek-v4"
MTP_FLAGS = [
    "--speculative-config", '{"num_speculative_tokens": 1, "method": "deepseek_mtp"}',
    "--async-scheduling",
]
PATCHED_FLAGS = [
    "--tokenizer-mode", "deepseek_v4",
    "--tool-call-parser", "deepseek_v4",
    "--enable-auto-tool-choice",
    "--reasoning-parser", "deepseek_v4",
    *MTP_FLAGS,
]
UNPATCHED_FLAGS = [
    "--tokenizer-mode", "deepseek_v32",
    "--tool-call-parser", "deepseek_v32",
    "--enable-auto-tool-choice",
    "--reasoning-parser", "deepseek_v3",
    *MTP_FLAGS,
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HarnessServer:
    """The real vLLM OpenAI server with the scripted engine, in a subprocess.

    `vllm_tree` goes first on PYTHONPATH (a tree patched by `dsv4patch apply`);
    None runs whatever vLLM the interpreter imports (the editable install).
    """

    def __init__(self, model_dir: Path, flags: list[str], log_path: Path,
                 vllm_tree: Path | None = None, startup_timeout: float = 180.0,
                 step_delay: float = 0.0,
                 extra_env: dict[str, str] | None = None,
                 default_steps: str = "mtp") -> None:
        self.model_dir = model_dir
        self.flags = flags
        self.log_path = log_path
        self.vllm_tree = vllm_tree
        self.startup_timeout = startup_timeout
        self.step_delay = step_delay
        self.extra_env = extra_env or {}
        self.default_steps = default_steps
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HarnessServer:
        path = [str(self.vllm_tree)] if self.vllm_tree else []
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, str(REPO)]),
               "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", **self.extra_env}
        argv = [sys.executable, "-m", "tests.harness.server", "--port", str(self.port),
                "--step-delay", str(self.step_delay),
                "--default-steps", self.default_steps, "--",
                "--model", str(self.model_dir), "--served-model-name", MODEL_NAME,
                *self.flags]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log,
                                            stderr=subprocess.STDOUT)
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"harness server exited with {self.process.returncode}:\n"
                    + self.log_tail())
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("harness server did not become healthy:\n" + self.log_tail())

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> int | None:
        """Terminate the server (then kill it if it lingers); return its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
        return self.process.returncode

    def __enter__(self) -> HarnessServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def push_script(self, text: str | list[str], steps: str = "",
                    eos: bool = True) -> None:
        """Queue the completion the model writes for the next request."""
        self._call("/harness/script", {"text": text, "steps": steps, "eos": eos})

    def requests(self) -> list[dict[str, Any]]:
        """What the serving layer asked the engine for, oldest first."""
        return self._call("/harness/requests")
