"""SIGINT and SIGTERM while files are being changed.

An apply turns them into an exception so its rollback runs; a revert holds
them until it is done, because finishing a revert is quicker and safer than
undoing half of one.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType

from dsv4patch.errors import Interrupted

HANDLED = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def raising(message: str) -> Iterator[None]:
    """Raise Interrupted(message) when a signal arrives inside the block."""
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(f"{signal.Signals(signum).name}: {message}")

    with _handlers(interrupt):
        yield


@contextlib.contextmanager
def deferred(message: str) -> Iterator[None]:
    """Let the block finish, then raise Interrupted(message) if a signal came."""
    received: list[int] = []

    def remember(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    with _handlers(remember):
        yield
    if received:
        raise Interrupted(f"{signal.Signals(received[0]).name}: {message}")


@contextlib.contextmanager
def _handlers(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    previous = {sig: signal.signal(sig, handler) for sig in HANDLED}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
