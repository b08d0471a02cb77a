"""Hashes, atomic file replacement and the other small file-system steps."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path


# What sha256() gives for a directory, pipe or device: no digest ever equals it.
NOT_A_FILE = "not a regular file"


def sha256(path: Path) -> str | None:
    """Return the file's sha256, or None when it does not exist."""
    digest = hashlib.sha256()
    try:
        # Opening a named pipe would wait for a writer forever.
        if not stat.S_ISREG(os.stat(path).st_mode):
            return NOT_A_FILE
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def resolves_inside(path: Path, real_root: Path) -> bool:
    """Whether `path` resolves to a place under `real_root`; a symlink loop on
    the way (which Path.resolve raises as RuntimeError) does not."""
    try:
        return path.resolve().is_relative_to(real_root)
    except (OSError, RuntimeError):
        return False


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# The suffix of write_atomic's scratch file, which a SIGKILL before its rename
# leaves behind; journal.prepare() removes such leftovers.
ATOMIC_SUFFIX = ".dsv4patch-tmp"


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new file."""
    fd, scratch = tempfile.mkstemp(prefix=f".{path.name}.", suffix=ATOMIC_SUFFIX,
                                   dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def copy_durable(source: Path, dest: Path) -> None:
    """Copy bytes and mode, then fsync, so the copy survives a power cut."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, dest, follow_symlinks=False)
    with open(dest, "rb") as f:
        os.fsync(f.fileno())


def install(source: Path, dest: Path) -> None:
    """Put a copy of `source` at `dest` through a rename in dest's directory."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = scratch_of(dest)
    copy_durable(source, scratch)
    os.replace(scratch, dest)


def scratch_of(dest: Path) -> Path:
    """The name `install` writes before its rename; a crash may leave it behind."""
    return dest.parent / f".{dest.name}.dsv4patch-new"


def bytecode_of(tree: Path, relpath: str) -> list[Path]:
    """The cached bytecode files of a source file, as remove_bytecode finds them."""
    source = tree / relpath
    if source.suffix != ".py":
        return []
    cache = source.parent / "__pycache__"
    return sorted(cache.glob(f"{source.stem}.*.pyc")) if cache.is_dir() else []


def remove_bytecode(tree: Path, relpath: str) -> list[Path]:
    """Delete cached bytecode of a source file; return what was removed."""
    removed = bytecode_of(tree, relpath)
    for stale in removed:
        stale.unlink(missing_ok=True)
    return removed


def prune_empty_dirs(tree: Path, relpath: str) -> None:
    """Remove directories left empty under `tree` above a deleted file."""
    parent = (tree / relpath).parent
    # Never above the tree, whatever the path claims.
    while (parent != tree and parent.is_relative_to(tree) and parent.is_dir()
           and not any(parent.iterdir())):
        parent.rmdir()
        parent = parent.parent


def writable_problem(path: Path) -> str | None:
    """Return why a file or directory cannot be changed in place, or None.

    Root passes os.access everywhere, so a real write probe decides: an immutable
    flag or a read-only mount only shows up when something is actually written.
    """
    try:
        if path.is_dir():
            # An unnamed file (O_TMPFILE) where the kernel has them: a run killed
            # here leaves no name in the tree.
            with tempfile.TemporaryFile(prefix=".dsv4patch-probe-", dir=path):
                pass
        elif path.exists():
            with open(path, "ab"):
                pass
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return f"{path}: {exc.strerror}"
        raise
    return None
