"""The whole job on the image trees, start to finish (`make demo`).

    before: the unpatched server refuses the deepseek_v4 mode, and with the
            flags it knows (DeepSeek-V3.2) the probe fails as operators saw
    check -> apply -> status -> patched server with the scripted engine -> probe
          -> stop -> revert -> the trees are byte for byte as found

The trees are the image layout in the cache ($DSV4PATCH_CACHE/image/vllm-workspace):
vLLM is the git clone installed editable in the venv, so the server below imports
exactly what `dsv4patch apply` changed. The server is vLLM's own OpenAI app on
127.0.0.1 with the operators' launch flags (deepseek_v4 tokenizer mode and parsers,
MTP speculative config, async scheduling); only the engine is scripted, because
there is no accelerator and no checkpoint here. Whatever happens, the server is
stopped and the trees are reverted; the exit code is 0 only if every step passed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness.launch import (  # noqa: E402
    MODEL_NAME,
    PATCHED_FLAGS,
    UNPATCHED_FLAGS,
    HarnessServer,
)
from tests.support import trees  # noqa: E402

IMAGE = trees.CACHE / "image" / "vllm-workspace"
TREES = {"vllm": IMAGE / "vllm", "vllm-ascend": IMAGE / "vllm-ascend"}
# Running Python leaves bytecode behind; it is not part of what the series changes.
IGNORED_DIRS = {"__pycache__"}


def dsv4patch(*args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "dsv4patch", *args]
    if args[0] != "probe":
        argv += ["--vllm", str(TREES["vllm"]),
                 "--vllm-ascend", str(TREES["vllm-ascend"])]
    print("$ dsv4patch " + " ".join(argv[3:]), flush=True)
    return subprocess.run(argv, cwd=REPO, text=True, capture_output=capture,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (symlinks by target), bytecode aside."""
    digests = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_DIRS)
        for name in filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                digests[rel] = "link:" + os.readlink(path)
            else:
                digests[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def describe_changes(before: dict[str, str], after: dict[str, str]) -> str:
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    added = sorted(after.keys() - before.keys())
    removed = sorted(before.keys() - after.keys())
    parts = [f"{label}: {', '.join(names[:5])}" for label, names in
             (("changed", changed), ("added", added), ("removed", removed)) if names]
    return "; ".join(parts) or "identical"


def tree_states() -> dict[str, str]:
    result = dsv4patch("status", "--json", capture=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip())
    return {tree["name"]: tree["state"] for tree in json.loads(result.stdout)["trees"]}


class Demo:
    def __init__(self) -> None:
        self.results: list[tuple[str, bool, str, float]] = []

    def step(self, name: str, action: Callable[[], str]) -> bool:
        print(f"\n== {name}", flush=True)
        started = time.monotonic()
        try:
            ok, detail = True, action()
        except Exception as exc:  # every failure ends up in the summary
            ok, detail = False, str(exc).strip().splitlines()[-1] if str(exc) else ""
        self.results.append((name, ok, detail, time.monotonic() - started))
        return ok

    def summary(self) -> bool:
        print("\n== summary")
        width = max(len(name) for name, *_ in self.results)
        for name, ok, detail, seconds in self.results:
            verdict = "ok  " if ok else "FAIL"
            print(f"{name:<{width}}  {verdict}  {seconds:6.1f}s  {detail[:110]}")
        passed = all(ok for _, ok, *_ in self.results)
        print("demo passed" if passed else "demo FAILED")
        return passed


def must(result: subprocess.CompletedProcess[str], what: str) -> str:
    if result.returncode != 0:
        raise RuntimeError(f"{what} exited with {result.returncode}")
    return "exit 0"


def main() -> int:
    for tree in TREES.values():
        if not tree.is_dir():
            print(f"{tree} is missing: run `make image` first", file=sys.stderr)
            return 1
    demo = Demo()
    found = {name: snapshot(path) for name, path in TREES.items()}
    states = tree_states()
    if set(states.values()) != {"not applied"}:
        print(f"the image trees are not pristine ({states}); run `dsv4patch revert` "
              "first", file=sys.stderr)
        return 1

    work = Path(tempfile.mkdtemp(prefix="dsv4patch-demo-"))
    model = trees.model_dir(work / "model")
    server = HarnessServer(model, PATCHED_FLAGS, work / "server.log")
    applied = False
    try:
        show_unpatched(demo, model, work)
        if demo.step("check", lambda: must(dsv4patch("check"), "check")):
            applied = demo.step("apply", lambda: must(dsv4patch("apply"), "apply"))
        if applied:
            demo.step("status", lambda: must(dsv4patch("status"), "status"))
            run_server_and_probe(demo, server)
    finally:
        server.stop()
        if applied:
            demo.step("revert", lambda: must(dsv4patch("revert"), "revert"))
        demo.step("trees as found", lambda: compare_trees(found))
    if not demo.summary():
        print(f"server log: {server.log_path}")
        return 1
    return 0


def show_unpatched(demo: Demo, model: Path, work: Path) -> None:
    """What operators saw on v0.13.0: both steps pass only if the server fails."""

    def mode_rejected() -> str:
        server = HarnessServer(model, PATCHED_FLAGS, work / "unpatched-v4.log")
        try:
            server.start()
        except RuntimeError:
            errors = [line for line in server.log_tail(200).splitlines()
                      if "deepseek_v4" in line]
            return "refused to start: " + (errors[-1].strip() if errors else "?")
        finally:
            server.stop()
        raise RuntimeError("the unpatched tree accepted --tokenizer-mode deepseek_v4")

    def probe_fails() -> str:
        with HarnessServer(model, UNPATCHED_FLAGS, work / "unpatched.log") as server:
            result = dsv4patch("probe", "--url", server.url + "/v1", "--model",
                               MODEL_NAME, "--json", capture=True)
        rows = json.loads(result.stdout)["checks"]
        failed = [row for row in rows if not row["passed"]]
        if result.returncode != 1 or not failed:
            raise RuntimeError(f"probe exited {result.returncode} on v0.13.0")
        for row in failed:
            print(f"  FAIL {row['name']}: {row['detail'][:100]}")
        return f"{len(failed)}/{len(rows)} checks fail, exit 1, as expected"

    demo.step("before: deepseek_v4 mode on v0.13.0", mode_rejected)
    demo.step("before: probe on v0.13.0 (V3.2 flags)", probe_fails)


def run_server_and_probe(demo: Demo, server: HarnessServer) -> None:
    def start() -> str:
        server.start()
        return f"{server.url}, flags: {' '.join(PATCHED_FLAGS)}"

    if not demo.step("start patched server", start):
        print(server.log_tail())
        return
    probe = ("probe", "--url", server.url + "/v1", "--model", MODEL_NAME)
    demo.step("probe", lambda: must(dsv4patch(*probe), "probe"))

    def stop() -> str:
        server.stop()
        return "stopped"

    demo.step("stop server", stop)


def compare_trees(found: dict[str, dict[str, str]]) -> str:
    for name, path in TREES.items():
        now = snapshot(path)
        if now != found[name]:
            raise RuntimeError(f"{name} differs: {describe_changes(found[name], now)}")
    counts = ", ".join(f"{name} {len(files)} files" for name, files in found.items())
    return f"identical ({counts})"


if __name__ == "__main__":
    sys.exit(main())
