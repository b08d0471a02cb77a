"""Recorded base manifests: the git blob hash and mode of every tracked file.

`patches/bases/<tree>-<version>.gitblob` is generated from the pristine trees
(`dsv4patch record-profiles`) in the format of `git ls-tree -r`: one
`<mode> blob <sha1>\\t<path>` line per file. A blob hash is what `git hash-object`
prints, so a manifest can be compared with any clone without reading it twice.
All four v0.13.0rc3 image profiles (`patches/profiles/`) share these manifests
and pin each one's sha256.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from dsv4patch import series as series_mod
from dsv4patch.errors import PatchError

SUFFIX = ".gitblob"
# Build byproducts and local metadata that never count as drift.
SKIP_DIRS = ("__pycache__", ".git", ".dsv4patch", "*.egg-info", "*.dist-info",
             ".pytest_cache", ".mypy_cache")
# Skipped only at the top of a tree: vllm-ascend tracks a csrc/.../build/ dir.
# Its csrc/build_aclnn.sh checks out the catlass submodule, builds the custom
# operators in csrc/ and installs them under vllm_ascend/_cann_ops_custom/, whose
# only tracked file is a .gitkeep beside vendors/.
SKIP_TOP = ("build/", "dist/", "rust/target/", ".deps/", "csrc/build/",
            "csrc/build_out/", "csrc/output/", "csrc/third_party/catlass/",
            "vllm_ascend/_cann_ops_custom/vendors/")
SKIP_FILES = ("*.pyc", "*.pyo", "*.so", "_version.py", ".DS_Store")
# Written by an install into the tree itself: vllm-ascend's setup.py records the
# device type it was built for here (fingerprint.py reads it as SoC evidence).
SKIP_GENERATED = ("vllm_ascend/_build_info.py",)
# More sampled differences than this and the tree is another release, not an edit.
OTHER_VERSION_THRESHOLD = 10
SAMPLE_EVERY = 12
REGULAR, EXECUTABLE, SYMLINK = "100644", "100755", "120000"


def directory() -> Path:
    return series_mod.locate() / "bases"


def manifest_name(tree: str, version: str) -> str:
    return f"{tree}-{version}{SUFFIX}"


def manifest_path(tree: str, version: str) -> Path:
    return directory() / manifest_name(tree, version)


def blob(path: Path) -> str | None:
    """The git blob hash of a file (of a symlink's target text), None if absent.

    Anything else git cannot record (a directory, a named pipe, a device) hashes
    as "": it is there and matches no recorded blob, and a pipe is never opened,
    which would wait for a writer forever.
    """
    try:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            data = os.readlink(path).encode()
        elif stat.S_ISREG(st.st_mode):
            data = path.read_bytes()
        else:
            return ""
    except FileNotFoundError:
        return None
    header = f"blob {len(data)}\0".encode()
    return hashlib.sha1(header + data, usedforsecurity=False).hexdigest()


def mode(path: Path) -> str | None:
    """The file's mode as git records it, None if absent."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return SYMLINK
    return EXECUTABLE if st.st_mode & stat.S_IXUSR else REGULAR


@functools.lru_cache(maxsize=8)
def _parse(path: Path, mtime: float) -> dict[str, tuple[str, str]]:
    del mtime  # part of the cache key only: a regenerated manifest is re-read
    entries: dict[str, tuple[str, str]] = {}
    for line in path.read_text().splitlines():
        head, _, rel = line.partition("\t")
        fields = head.split(" ")
        if rel and len(fields) == 3:
            entries[rel] = (fields[0], fields[2])
    return entries


def load_entries(tree: str, version: str) -> dict[str, tuple[str, str]]:
    """Return {relpath: (mode, blob)} of the base; raise PatchError when unrecorded."""
    path = manifest_path(tree, version)
    if not path.is_file():
        raise PatchError(f"no recorded base for {tree} {version} ({path})",
                         hint="the series directory is incomplete; reinstall it")
    return _parse(path, path.stat().st_mtime)


def load(tree: str, version: str) -> dict[str, str]:
    """Return {relpath: blob hash} of the base."""
    return {rel: digest for rel, (_, digest) in load_entries(tree, version).items()}


_SKIP_DIR = re.compile("|".join(fnmatch.translate(p) for p in SKIP_DIRS))
_SKIP_FILE = re.compile("|".join(fnmatch.translate(p) for p in SKIP_FILES))


def skipped(rel: str) -> bool:
    parts = rel.split("/")
    if any(_SKIP_DIR.match(part) for part in parts[:-1]):
        return True
    if rel.startswith(SKIP_TOP) or rel in SKIP_GENERATED:
        return True
    return _SKIP_FILE.match(parts[-1]) is not None


def walk(tree: Path) -> Iterator[str]:
    """Yield every file under `tree` that is not a known byproduct."""
    for root, dirs, files in os.walk(tree):
        rel_root = os.path.relpath(root, tree)
        prefix = "" if rel_root == "." else f"{rel_root}/"
        # A symlink to a directory is one tracked entry in git, not a subtree.
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        dirs[:] = sorted(d for d in dirs
                         if not _SKIP_DIR.match(d) and d not in links
                         and not f"{prefix}{d}/".startswith(SKIP_TOP))
        for name in sorted(files + links):
            rel = f"{prefix}{name}"
            if not _SKIP_FILE.match(name) and rel not in SKIP_GENERATED:
                yield rel


def record(tree: Path) -> str:
    """Render the manifest of `tree` in `git ls-tree -r` format."""
    return "".join(f"{mode(tree / rel)} blob {blob(tree / rel)}\t{rel}\n"
                   for rel in sorted(walk(tree)))


def differing(tree: Path, manifest: dict[str, str], paths: list[str]) -> list[str]:
    """The paths whose content is not the base's (absent counts as absent)."""
    return [rel for rel in paths if blob(tree / rel) != manifest.get(rel)]


def sample_mismatches(tree: Path, manifest: dict[str, str]) -> int:
    """Hash every SAMPLE_EVERY-th recorded file; return how many differ."""
    return len(differing(tree, manifest, sorted(manifest)[::SAMPLE_EVERY]))
