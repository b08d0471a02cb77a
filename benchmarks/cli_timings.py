"""How long the CLI takes on the real trees, against raw `git apply --check`.

    python benchmarks/cli_timings.py [--repeat 5]

Copies both pristine trees into a temporary directory (once as plain directories,
once with vLLM as a git clone, the image layout) and times, end to end as a user
runs them, `dsv4patch check`, `status`, `apply`, `status` (applied), `drift` and
`revert`. The yardstick is one raw `git apply --check` per tree of that tree's
patches concatenated (cumulative, as the series is), which verifies nothing else:
no sha256 pins, no base, no journal, no lock. Prints a Markdown table of medians and
each command's ratio to the yardstick, plus Python's bare start-up for scale.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("DSV4PATCH_CACHE", Path.home() / ".cache" / "dsv4patch"))
ENV = {**os.environ, "PYTHONPATH": str(REPO), "GIT_CONFIG_NOSYSTEM": "1",
       "GIT_CONFIG_GLOBAL": os.devnull}


def timed(argv: list[str], cwd: Path | None = None, stdin: bytes | None = None,
          expect: int = 0) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, input=stdin, capture_output=True, env=ENV)
    elapsed = time.perf_counter() - start
    if done.returncode != expect:
        sys.exit(f"{argv} exited {done.returncode}: {done.stderr.decode()[-400:]}")
    return elapsed


def raw_check(trees: dict[str, Path]) -> float:
    """One cumulative `git apply --check` per tree, fenced to the tree itself."""
    manifest = tomllib.loads((REPO / "patches" / "series.toml").read_text())
    total = 0.0
    for name, tree in trees.items():
        data = b"".join((REPO / "patches" / p["file"]).read_bytes()
                        for p in manifest.get("patch", []) if p["tree"] == name)
        if data:
            total += timed(["git", "apply", "--check", "-"], cwd=tree, stdin=data)
    return total


def layout(root: Path, git_clone: bool) -> dict[str, Path]:
    trees = {name: root / name for name in ("vllm", "vllm-ascend")}
    for name, tree in trees.items():
        shutil.copytree(CACHE / "pristine" / name, tree, symlinks=True)
    if git_clone:
        for args in (["init", "-q", "-b", "main"], ["add", "--all"],
                     ["-c", "user.name=b", "-c", "user.email=b@localhost", "commit",
                      "-q", "-m", "v0.13.0"], ["tag", "v0.13.0"]):
            subprocess.run(["git", *args], cwd=trees["vllm"], check=True, env=ENV)
    return trees


def measure(trees: dict[str, Path], repeat: int) -> dict[str, list[float]]:
    cli = [sys.executable, "-m", "dsv4patch", "-q"]
    paths = ["--vllm", str(trees["vllm"]), "--vllm-ascend", str(trees["vllm-ascend"])]
    rows: dict[str, list[float]] = {}
    for _ in range(repeat):
        for label, argv in (
            ("python start-up", [sys.executable, "-c", "pass"]),
            ("raw git apply --check", None),
            ("check", [*cli, "check", *paths]),
            ("status (not applied)", [*cli, "status", *paths]),
            ("apply", [*cli, "apply", *paths]),
            ("status (applied)", [*cli, "status", *paths]),
            ("apply (already applied)", [*cli, "apply", *paths]),
            ("drift (applied)", [*cli, "drift", *paths]),
            ("revert", [*cli, "revert", *paths]),
        ):
            seconds = raw_check(trees) if argv is None else timed(argv)
            rows.setdefault(label, []).append(seconds)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for git_clone in (False, True):
        with tempfile.TemporaryDirectory(prefix="dsv4patch-bench-") as scratch:
            rows = measure(layout(Path(scratch), git_clone), args.repeat)
        yardstick = statistics.median(rows["raw git apply --check"])
        shape = "vLLM a git clone (image layout)" if git_clone else "plain directories"
        print(f"\n### {shape}, median of {args.repeat}\n")
        print("| command | seconds | × raw git apply --check |")
        print("|---|---:|---:|")
        for label, samples in rows.items():
            median = statistics.median(samples)
            print(f"| {label} | {median:.3f} | {median / yardstick:.1f} |")


if __name__ == "__main__":
    main()
