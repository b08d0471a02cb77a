"""One run at a time per tree: an flock keyed by the tree's real path.

The lock files live outside the trees, so a read-only tree can still be locked
for `check` and `status`, and the tree itself stays byte-identical.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from dsv4patch.errors import PatchError

POLL_SECONDS = 0.1


def lock_dir() -> Path:
    default = Path(tempfile.gettempdir()) / f"dsv4patch-locks-{os.getuid()}"
    directory = Path(os.environ.get("DSV4PATCH_LOCK_DIR", default))
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


def wait_seconds() -> float:
    return float(os.environ.get("DSV4PATCH_LOCK_WAIT", "10"))


@contextlib.contextmanager
def locked(trees: list[Path]) -> Iterator[None]:
    """Hold an exclusive lock on every tree, taken in a fixed order."""
    with contextlib.ExitStack() as stack:
        for tree in sorted({t.resolve() for t in trees}):
            stack.enter_context(_one(tree))
        yield


@contextlib.contextmanager
def _one(tree: Path) -> Iterator[None]:
    key = hashlib.sha256(str(tree).encode()).hexdigest()[:24]
    handle = open(lock_dir() / f"{key}.lock", "a+")
    deadline = time.monotonic() + wait_seconds()
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise PatchError(
                        f"another dsv4patch run holds the lock on {tree}",
                        hint="wait for it to finish, or raise DSV4PATCH_LOCK_WAIT",
                    ) from None
                time.sleep(POLL_SECONDS)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {tree}\n")
        handle.flush()
        yield
    finally:
        handle.close()
