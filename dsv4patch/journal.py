"""The apply journal each tree carries in `.dsv4patch/`.

`journal.json` records the series version and digest, every patch's sha256 and,
per file, the sha256 before and after the apply. Its `state` is the intent
marker: `applying` is written before the first file changes and `applied` only
after the last one did, so a run killed in between is found and rolled back.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dsv4patch import __version__
from dsv4patch.errors import PatchError
from dsv4patch.files import write_atomic

DIRNAME = ".dsv4patch"
APPLYING, APPLIED, REVERTING = "applying", "applied", "reverting"
FORMAT = 1


@dataclass
class FileRecord:
    path: str
    before: str | None
    after: str | None


@dataclass
class Journal:
    tree: str
    series_version: str
    series_digest: str
    patches: dict[str, str]
    files: list[FileRecord]
    state: str = APPLYING
    variants: list[str] = field(default_factory=list)
    tool_version: str = __version__
    started: float = field(default_factory=time.time)
    finished: float | None = None
    format: int = FORMAT


class JournalDamaged(PatchError):
    """The journal exists but cannot be read."""


def workdir(tree: Path) -> Path:
    return tree / DIRNAME


def path(tree: Path) -> Path:
    return workdir(tree) / "journal.json"


def backup_path(tree: Path, relpath: str) -> Path:
    return workdir(tree) / "backup" / relpath


def refuse_odd_workdir(tree: Path) -> None:
    """Refuse a work directory that is a symlink or not a directory: writing
    the journal and backups through it would land outside the tree."""
    directory = workdir(tree)
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise PatchError(f"{directory} is not a plain directory",
                         hint="dsv4patch keeps its journal there; move that "
                         "entry out of the tree and rerun")


def prepare(tree: Path) -> Path:
    """Create the work directory, kept out of `git status` by its own ignore file."""
    refuse_odd_workdir(tree)
    directory = workdir(tree)
    directory.mkdir(exist_ok=True)
    (directory / ".gitignore").write_text("*\n")
    return directory


def write(tree: Path, journal: Journal) -> None:
    data = json.dumps(asdict(journal), indent=2, sort_keys=True) + "\n"
    write_atomic(path(tree), data.encode())


def read(tree: Path, footprint: list[str]) -> Journal | None:
    """Return the tree's journal, None without one; raise JournalDamaged.

    Only the series' own files (`footprint`) may be named in it: revert deletes
    and overwrites what the journal lists, so a path outside it is damage.
    """
    refuse_odd_workdir(tree)
    try:
        raw = json.loads(path(tree).read_text())
        records = [FileRecord(**r) for r in raw.pop("files")]
        journal = Journal(files=records, **raw)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise JournalDamaged(
            f"the journal {path(tree)} is damaged ({type(exc).__name__})",
            hint="`dsv4patch revert --from-patches` restores the tree if every file "
            "still holds the patched content; otherwise restore the files by hand "
            f"from {workdir(tree) / 'backup'}",
        ) from exc
    if journal.state not in (APPLYING, APPLIED, REVERTING):
        raise JournalDamaged(f"the journal {path(tree)} has unknown state "
                             f"{journal.state!r}", hint="see `dsv4patch status`")
    for record in journal.files:
        _check_record(tree, record, set(footprint))
    return journal


def _check_record(tree: Path, record: FileRecord, footprint: set[str]) -> None:
    rel = record.path
    real = tree.resolve()
    safe = (isinstance(rel, str) and rel in footprint and not rel.startswith("/")
            and ".." not in rel.split("/")
            and (tree / rel).resolve().is_relative_to(real)
            and not (tree / rel).is_symlink())
    if not safe:
        raise JournalDamaged(
            f"the journal {path(tree)} names {rel!r}, which is not a file this "
            "series changes inside the tree",
            hint="nothing was changed; `dsv4patch revert --from-patches` restores "
            "the tree from the patches if every file still holds the patched content",
        )


def remove(tree: Path) -> None:
    if workdir(tree).is_symlink():
        return  # never follow it out of the tree; refuse_odd_workdir names it
    shutil.rmtree(workdir(tree), ignore_errors=True)
