"""The write probe must never leave a name in the tree, even if the process
dies between creating its file and removing it (as a SIGKILL would)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dsv4patch import files


def test_the_write_probe_never_names_a_file_in_the_tree(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Killed(BaseException):
        pass

    def killed(*args: object, **kwargs: object) -> None:
        raise Killed

    # Dying where the probe would remove a named file: nothing may stay behind.
    monkeypatch.setattr(os, "unlink", killed)
    monkeypatch.setattr(os, "remove", killed)
    try:
        assert files.writable_problem(tmp_path) is None
    except Killed:
        pass

    assert list(tmp_path.iterdir()) == []
