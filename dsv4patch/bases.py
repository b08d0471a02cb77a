"""Recorded base manifests: the sha256 of every tracked file of each upstream tree.

`patches/bases/<tree>-<version>.sha256` is generated from the pristine trees
(`dsv4patch record-base`) in `sha256sum` format. All four v0.13.0rc3 image
variants ship these same tracked files; `variants.py` names the variants and the
hints (/etc/os-release, SOC_VERSION) that tell them apart.
"""

from __future__ import annotations

import fnmatch
import functools
import os
from collections.abc import Iterator
from pathlib import Path

from dsv4patch import series as series_mod
from dsv4patch.errors import PatchError
from dsv4patch.files import sha256

# Build byproducts and local metadata that never count as drift.
SKIP_DIRS = ("__pycache__", ".git", ".dsv4patch", "*.egg-info", ".pytest_cache",
             ".mypy_cache")
# Skipped only at the top of a tree: vllm-ascend tracks a csrc/.../build/ dir.
SKIP_TOP = ("build/", "dist/", "rust/target/", ".deps/")
SKIP_FILES = ("*.pyc", "*.pyo", "*.so", "_version.py", ".DS_Store")
# More sampled differences than this and the tree is another release, not an edit.
OTHER_VERSION_THRESHOLD = 10
SAMPLE_EVERY = 12


def directory() -> Path:
    return series_mod.locate() / "bases"


def manifest_path(tree: str, version: str) -> Path:
    return directory() / f"{tree}-{version}.sha256"


@functools.lru_cache(maxsize=8)
def _load_cached(path: Path) -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in path.read_text().splitlines():
        digest, _, rel = line.partition("  ")
        if rel:
            entries[rel] = digest
    return entries


def load(tree: str, version: str) -> dict[str, str]:
    """Return {relpath: sha256} of the base; raise PatchError when unrecorded."""
    path = manifest_path(tree, version)
    if not path.is_file():
        raise PatchError(f"no recorded base for {tree} {version} ({path})",
                         hint="the series directory is incomplete; reinstall it")
    return _load_cached(path)


def skipped(rel: str) -> bool:
    parts = rel.split("/")
    if any(fnmatch.fnmatch(p, pat) for p in parts[:-1] for pat in SKIP_DIRS):
        return True
    if rel.startswith(SKIP_TOP):
        return True
    return any(fnmatch.fnmatch(parts[-1], pat) for pat in SKIP_FILES)


def walk(tree: Path) -> Iterator[str]:
    """Yield every file under `tree` that is not a known byproduct, sorted."""
    for root, dirs, files in os.walk(tree):
        rel_root = os.path.relpath(root, tree)
        prefix = "" if rel_root == "." else f"{rel_root}/"
        dirs[:] = sorted(d for d in dirs
                         if not any(fnmatch.fnmatch(d, p) for p in SKIP_DIRS)
                         and not f"{prefix}{d}/".startswith(SKIP_TOP))
        for name in sorted(files):
            rel = name if rel_root == "." else f"{rel_root}/{name}"
            if not skipped(rel):
                yield rel


def record(tree: Path) -> str:
    """Render the manifest of `tree` in sha256sum format."""
    return "".join(f"{sha256(tree / rel)}  {rel}\n" for rel in walk(tree))


def differing(tree: Path, manifest: dict[str, str], paths: list[str]) -> list[str]:
    """The paths whose content is not the base's (absent counts as absent)."""
    return [rel for rel in paths if sha256(tree / rel) != manifest.get(rel)]


def sample_mismatches(tree: Path, manifest: dict[str, str]) -> int:
    """Hash every SAMPLE_EVERY-th recorded file; return how many differ."""
    return len(differing(tree, manifest, sorted(manifest)[::SAMPLE_EVERY]))
