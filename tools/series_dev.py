"""Work on one patch of the series in a git scratch tree, then write it back.

    python tools/series_dev.py devtree NAME DEST [--tree vllm]
        DEST becomes a git repo of the pristine tree that NAME targets, with every
        earlier patch of that tree committed (the series is ordered by file name),
        and NAME itself, if it exists yet, applied on top, uncommitted, ready to
        edit. A patch new to the series needs --tree.

    python tools/series_dev.py refresh NAME DEST --tree vllm \\
            --description "..." --origin "..."
        Writes `git diff HEAD` of DEST (new files included) to patches/NAME with a
        DEP-3 style header, and records its sha256 in patches/series.toml.
        Description and origin default to the ones already recorded.

Pristine trees come from tools/pristine.py (`make pristine`).
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from pristine import CACHE, GIT_IDENTITY

ROOT = Path(__file__).resolve().parent.parent
PATCHES = ROOT / "patches"
SERIES = PATCHES / "series.toml"
HEADER_FIELDS = ("Description", "Origin", "Last-Update")


def git(tree: Path, *args: str, capture: bool = False) -> str:
    result = subprocess.run(
        ["git", *args], cwd=tree, check=True, text=True,
        env={**os.environ, **GIT_IDENTITY, "GIT_CEILING_DIRECTORIES": str(tree.parent)},
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
    )
    return result.stdout if capture else ""


def load_series() -> dict:
    with open(SERIES, "rb") as f:
        return tomllib.load(f)


def toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def dump_series(series: dict) -> str:
    """Render series.toml in its one fixed layout (tomllib cannot write)."""
    lines = [
        "# The dsv4patch series: applied in order, each patch to one tree.",
        "# `sha256` pins the exact bytes of each patch file; "
        "tools/series_dev.py keeps it current.",
        "",
        f"version = {toml_string(series['version'])}",
    ]
    for tree, base in series["base"].items():
        lines += ["", f"[base.{tree}]"]
        lines += [f"{key} = {toml_string(value)}" for key, value in base.items()]
    for patch in series.get("patch", []):
        lines += ["", "[[patch]]"]
        lines += [f"{key} = {toml_string(value)}" for key, value in patch.items()]
    return "\n".join(lines) + "\n"


def devtree(name: str, dest: Path, tree: str | None) -> None:
    series = load_series()
    entries = series.get("patch", [])
    own = next((p for p in entries if p["file"] == name), None)
    if own is None and tree is None:
        sys.exit(f"error: {name} is new to the series; name its --tree")
    own = own or {"file": name, "tree": tree}
    if dest.exists():
        sys.exit(f"error: {dest} exists; remove it first")
    shutil.copytree(CACHE / "pristine" / own["tree"], dest, symlinks=True)
    git(dest, "init", "--quiet", "--initial-branch=main")
    git(dest, "add", "--all")
    git(dest, "commit", "--quiet", "--message", "pristine")
    for patch in entries:
        if patch["tree"] != own["tree"] or patch["file"] > name:
            continue
        path = PATCHES / patch["file"]
        if patch["file"] == name:
            if path.exists():
                git(dest, "apply", "--whitespace=nowarn", str(path))
            break
        git(dest, "apply", "--whitespace=nowarn", str(path))
        git(dest, "add", "--all")
        git(dest, "commit", "--quiet", "--message", patch["file"])
    print(f"{dest}: ready ({own['tree']}, {name} uncommitted on top)")


def read_header(path: Path) -> dict[str, str]:
    header: dict[str, str] = {}
    if not path.exists():
        return header
    for line in path.read_text().splitlines():
        if line.startswith("diff --git") or line == "---":
            break
        key, _, value = line.partition(": ")
        if key in HEADER_FIELDS:
            header[key] = value
    return header


def refresh(name: str, dest: Path, tree: str | None, description: str | None,
            origin: str | None) -> None:
    git(dest, "add", "--all", "--intent-to-add")
    body = git(dest, "diff", "--no-color", "--no-ext-diff", "--no-renames",
               "HEAD", capture=True)
    git(dest, "reset", "--quiet")
    if not body:
        sys.exit(f"error: {dest} has no changes against its last commit")

    with open(PATCHES / ".series.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        series = load_series()
        entries = series.setdefault("patch", [])
        entry = next((p for p in entries if p["file"] == name), None)
        if entry is None:
            if not (tree and description and origin):
                sys.exit("error: a new patch needs --tree, --description and --origin")
            entry = {"file": name, "tree": tree}
            entries.append(entry)
            entries.sort(key=lambda p: p["file"])
        entry["description"] = description or entry["description"]
        entry["origin"] = origin or entry["origin"]

        header = (f"Description: {entry['description']}\n"
                  f"Origin: {entry['origin']}\n"
                  f"Last-Update: {datetime.date.today().isoformat()}\n---\n")
        data = (header + body).encode()
        (PATCHES / name).write_bytes(data)
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        SERIES.write_text(dump_series(series))
    print(f"patches/{name}: {len(data)} bytes, sha256 {entry['sha256'][:12]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("devtree")
    make.add_argument("name")
    make.add_argument("dest", type=Path)
    make.add_argument("--tree", choices=("vllm", "vllm-ascend"))
    write = sub.add_parser("refresh")
    write.add_argument("name")
    write.add_argument("dest", type=Path)
    write.add_argument("--tree", choices=("vllm", "vllm-ascend"))
    write.add_argument("--description")
    write.add_argument("--origin")
    args = parser.parse_args()
    if args.command == "devtree":
        devtree(args.name, args.dest.resolve(), args.tree)
    else:
        refresh(args.name, args.dest.resolve(), args.tree, args.description,
                args.origin)


if __name__ == "__main__":
    main()
