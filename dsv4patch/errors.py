"""The failures the CLI turns into exit codes."""

from __future__ import annotations


class PatchError(Exception):
    """A refusal or failure the user can act on: exit 1, one `Error:` line."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; whatever was half done has been undone."""
