"""Putting files back as the journal recorded them before an apply."""

from __future__ import annotations

import logging
from pathlib import Path

from dsv4patch import journal as journal_mod
from dsv4patch.errors import PatchError
from dsv4patch.files import (
    install,
    prune_empty_dirs,
    remove_bytecode,
    scratch_of,
    sha256,
)
from dsv4patch.hooks import step
from dsv4patch.journal import FileRecord, Journal

log = logging.getLogger(__name__)


def sort_files(tree: Path, journal: Journal) -> tuple[list[FileRecord], list[str]]:
    """Split the journal's files into (to restore, edited since apply)."""
    pending: list[FileRecord] = []
    edited: list[str] = []
    for record in journal.files:
        current = sha256(tree / record.path)
        if current == record.before:
            continue
        if current == record.after:
            pending.append(record)
        else:
            edited.append(record.path)
    return pending, edited


def refuse_edited(tree: Path, edited: list[str]) -> None:
    if edited:
        shown = ", ".join(edited[:5]) + (" ..." if len(edited) > 5 else "")
        raise PatchError(
            f"{tree} has files edited after apply: {shown}; nothing was changed",
            hint="save your edits, then put back the patched content (or the "
            f"originals from {journal_mod.workdir(tree) / 'backup'}) and rerun",
        )


def restore(tree: Path, records: list[FileRecord], backups: Path | None = None) -> None:
    """Return each file to its recorded `before` content, or remove it.

    The copies come from the journal's backup directory, or from `backups`
    (an upgrade keeps the files of the series it replaces there).
    """
    for number, record in enumerate(records):
        target = tree / record.path
        if record.before is None:
            target.unlink(missing_ok=True)
            prune_empty_dirs(tree, record.path)
        else:
            backup = (backups / record.path if backups is not None else
                      journal_mod.backup_path(tree, record.path))
            if sha256(backup) != record.before:
                raise PatchError(f"the backup of {record.path} in {tree} is missing "
                                 "or damaged; that file was left as it is",
                                 hint=f"restore {record.path} from a pristine tree")
            install(backup, target)
        _drop_bytecode(tree, record.path)
        log.debug("restored %s", target)
        if number == 0:
            step("restore-first")


def _drop_bytecode(tree: Path, relpath: str) -> None:
    # Stale bytecode is only a cache that Python rebuilds by mtime; failing to
    # delete it must not stop the files themselves from being put back.
    try:
        remove_bytecode(tree, relpath)
    except OSError as exc:
        log.warning("could not remove the cached bytecode of %s: %s", relpath, exc)


def remove_scratch(tree: Path, records: list[FileRecord]) -> None:
    """Delete what an `install` killed before its rename left beside each file."""
    for record in records:
        scratch_of(tree / record.path).unlink(missing_ok=True)


def roll_back(tree: Path, journal: Journal) -> None:
    """Undo an interrupted or failed apply; refuse if anything else changed."""
    pending, edited = sort_files(tree, journal)
    refuse_edited(tree, edited)
    restore(tree, pending)
    remove_scratch(tree, journal.files)
    journal_mod.remove(tree)
