"""Test hook: make the boundaries between the steps of a run observable.

With DSV4PATCH_TEST_PAUSE_AT=<step> the process sends itself a signal right
after that step (SIGKILL unless DSV4PATCH_TEST_SIGNAL names another, e.g. TERM,
INT or STOP), so the test suite can prove that every boundary is recoverable and
that a second run meets the lock. Never set it outside tests.
"""

from __future__ import annotations

import logging
import os
import signal

from dsv4patch.errors import PatchError

log = logging.getLogger(__name__)

PAUSE_ENV = "DSV4PATCH_TEST_PAUSE_AT"
SIGNAL_ENV = "DSV4PATCH_TEST_SIGNAL"
APPLY_STEPS = ("locked", "backup", "journal", "replace-first", "replaced", "bytecode",
               "committed")
REVERT_STEPS = ("revert-journal", "restore-first")


def step(name: str) -> None:
    log.debug("step %s done", name)
    if os.environ.get(PAUSE_ENV) == name:
        chosen = os.environ.get(SIGNAL_ENV, "KILL")
        os.kill(os.getpid(), signal.Signals[f"SIG{chosen}"])


def check_environment() -> None:
    """Refuse a misspelt hook before the run starts rather than halfway through."""
    pause = os.environ.get(PAUSE_ENV)
    if pause and pause not in APPLY_STEPS + REVERT_STEPS:
        raise PatchError(f"{PAUSE_ENV}={pause!r} names no step",
                         hint=f"unset {PAUSE_ENV}; it is for the test suite")
    chosen = os.environ.get(SIGNAL_ENV)
    if chosen and f"SIG{chosen}" not in signal.Signals.__members__:
        raise PatchError(f"{SIGNAL_ENV}={chosen!r} names no signal",
                         hint=f"unset {SIGNAL_ENV}; it is for the test suite")
