"""One run at a time per tree: an flock keyed by the tree's real path.

The lock files live outside the trees, so a read-only tree can still be locked
for `check` and `status`, and the tree itself stays byte-identical. Their
directory is fixed (not the caller's TMPDIR, not per user), so every run on the
same tree meets the same lock. Runs that change a tree hold it exclusively;
`check`, `status` and `drift` share it, so they never see a run half done.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from typing import IO
from pathlib import Path

from dsv4patch.errors import PatchError

POLL_SECONDS = 0.1
# /run/lock is the system's place for lock files; /tmp when it is missing.
DEFAULT_DIRS = (Path("/run/lock/dsv4patch"), Path("/tmp/dsv4patch-locks"))


def lock_dir() -> Path:
    """The lock directory, created world-writable and sticky like /tmp."""
    given = os.environ.get("DSV4PATCH_LOCK_DIR")
    candidates = [Path(given)] if given else list(DEFAULT_DIRS)
    for directory in candidates:
        if not given and not directory.parent.is_dir():
            continue
        try:
            if not directory.is_dir():
                directory.mkdir(parents=True)
                directory.chmod(0o1777)
            return directory
        except OSError as exc:
            if given:
                raise PatchError(f"cannot use the lock directory {directory}: "
                                 f"{exc.strerror or exc}",
                                 hint="point $DSV4PATCH_LOCK_DIR at a writable "
                                 "directory") from exc
    raise PatchError("no directory for lock files",
                     hint="set $DSV4PATCH_LOCK_DIR to a writable directory")


def wait_seconds() -> float:
    text = os.environ.get("DSV4PATCH_LOCK_WAIT", "10")
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise PatchError(f"DSV4PATCH_LOCK_WAIT={text!r} is not a number of seconds",
                         hint="set it to a number such as 10, or unset it")
    return seconds


@contextlib.contextmanager
def locked(trees: list[Path], shared: bool = False) -> Iterator[None]:
    """Hold a lock on every tree, taken in a fixed order; exclusive unless
    `shared` (for commands that only read)."""
    with contextlib.ExitStack() as stack:
        for tree in sorted({t.resolve() for t in trees}):
            stack.enter_context(_one(tree, shared))
        yield


def _open(path: Path) -> int:
    # Another user's lock file may be read-only to us; flock works on any fd.
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        return os.open(path, os.O_RDONLY)
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o666)
    return fd


@contextlib.contextmanager
def _one(tree: Path, shared: bool) -> Iterator[None]:
    key = hashlib.sha256(str(tree).encode()).hexdigest()[:24]
    wait = wait_seconds()
    try:
        fd = _open(lock_dir() / f"{key}.lock")
    except OSError as exc:
        raise PatchError(f"cannot open the lock file for {tree}: "
                         f"{exc.strerror or exc}",
                         hint="point $DSV4PATCH_LOCK_DIR at a writable "
                         "directory") from exc
    # A read-only fd still locks; writing the owner note then fails quietly.
    handle = os.fdopen(fd, "r+")
    deadline = time.monotonic() + wait
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        while True:
            try:
                fcntl.flock(handle, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise PatchError(
                        f"another dsv4patch run holds the lock on {tree}",
                        hint="wait for it to finish, or raise DSV4PATCH_LOCK_WAIT",
                    ) from None
                time.sleep(POLL_SECONDS)
        if not shared:
            _note_owner(handle, tree)
        yield
    finally:
        handle.close()


def _note_owner(handle: IO[str], tree: Path) -> None:
    """Write who holds the lock, for a person looking; not needed for locking."""
    with contextlib.suppress(OSError):
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {tree}\n")
        handle.flush()
