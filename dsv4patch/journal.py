"""The apply journal each tree carries in `.dsv4patch/`.

`journal.json` records the series version and digest, every patch's sha256 and,
per file, the sha256 before and after the apply. Its `state` is the intent
marker: `applying` is written before the first file changes and `applied` only
after the last one did, so a run killed in between is found and rolled back.

Beside it, `series/<digest>/` keeps a copy of the applied series (series.toml and
its patch files), written before the journal that names it. Reading the journal
verifies that copy against its pinned sha256s and the journal's digest, and takes
the files the journal may name from it, so a journal left by an older series
stays readable by a newer release. Journals written before the copy existed have
no `series_copy` and are checked against the running series, as before.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dsv4patch import __version__
from dsv4patch import series as series_mod
from dsv4patch.errors import PatchError
from dsv4patch.files import ATOMIC_SUFFIX, fsync_dir, resolves_inside, write_atomic

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
    # Relative to the work directory; empty in journals older than the copy.
    series_copy: str = ""
    # The series version this one replaced in place, when it was an upgrade.
    upgraded_from: str = ""


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
    # Scratch files of atomic writes a killed run never renamed; the lock is
    # held, so no live run is writing them.
    pattern = f".*{ATOMIC_SUFFIX}"
    for stale in [*directory.glob(pattern), *directory.glob(f"series/*/{pattern}")]:
        stale.unlink(missing_ok=True)
    return directory


def write(tree: Path, journal: Journal) -> None:
    write_to(path(tree), journal)


def write_to(where: Path, journal: Journal) -> None:
    data = json.dumps(asdict(journal), indent=2, sort_keys=True) + "\n"
    write_atomic(where, data.encode())


def copy_name(digest: str) -> str:
    """Where the copy of the series with `digest` lives, inside the work directory."""
    return f"series/{digest[:16]}"


def copy_dir(tree: Path, digest: str) -> Path:
    return workdir(tree) / copy_name(digest)


def store_series(tree: Path, series: series_mod.Series) -> str:
    """Copy series.toml and every patch file of `series` into the work directory;
    return the copy's path relative to it, for the journal's `series_copy`.

    Each file is written atomically and the copy completes before any journal
    names it, so a journal never points at half a copy.
    """
    target = copy_dir(tree, series.digest)
    target.mkdir(parents=True, exist_ok=True)
    for patch in series.patches:
        write_atomic(target / patch.file, patch.data)
    write_atomic(target / series_mod.MANIFEST,
                 (series.directory / series_mod.MANIFEST).read_bytes())
    fsync_dir(target.parent)
    # series.toml was read twice; a manifest edited in between must not pass.
    if series_mod.load(target).digest != series.digest:
        raise PatchError(f"{series.directory} changed while it was being copied",
                         hint="rerun once nothing is writing the series")
    return copy_name(series.digest)


def stored_series(tree: Path, journal: Journal) -> series_mod.Series | None:
    """The copy of the series the journal was written by, verified; None for a
    journal older than the copy. Raises JournalDamaged on a bad copy."""
    if not journal.series_copy:
        return None
    name = journal.series_copy
    where = workdir(tree) / name if isinstance(name, str) else workdir(tree)
    if (not isinstance(name, str) or ".." in name.split("/")
            or not resolves_inside(where, workdir(tree).resolve())):
        raise JournalDamaged(f"the journal {path(tree)} names its series copy "
                             f"outside {workdir(tree)}", hint=_DAMAGED_HINT)
    try:
        stored = series_mod.load(where)
    except PatchError as exc:
        raise JournalDamaged(f"the series copy kept with {path(tree)} is damaged: "
                             f"{exc.message}", hint=_DAMAGED_HINT) from exc
    if stored.digest != journal.series_digest:
        raise JournalDamaged(f"the series copy kept with {path(tree)} is not the "
                             f"series the journal records ({journal.series_version})",
                             hint=_DAMAGED_HINT)
    return stored


_DAMAGED_HINT = ("`dsv4patch revert --from-patches` restores the tree if every file "
                 "still holds the patched content; otherwise restore the files by "
                 "hand from the backups in .dsv4patch/backup")


def read(tree: Path, footprint: list[str]) -> Journal | None:
    """Return the tree's journal, None without one; raise JournalDamaged.

    Only the series' own files may be named in it: revert deletes and overwrites
    what the journal lists, so a path outside it is damage. The series is the
    journal's stored copy when it has one, else the running one (`footprint`).
    """
    return read_file(path(tree), tree, footprint)


def read_file(where: Path, tree: Path, footprint: list[str],
              also: tuple[str, ...] = ()) -> Journal | None:
    """Read the journal at `where` (the tree's, or an upgrade's) as `read` does;
    the paths in `also` may be named too."""
    refuse_odd_workdir(tree)
    try:
        raw = json.loads(where.read_text())
        records = [FileRecord(**r) for r in raw.pop("files")]
        journal = Journal(files=records, **raw)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise JournalDamaged(
            f"the journal {where} is damaged ({type(exc).__name__})",
            hint="`dsv4patch revert --from-patches` restores the tree if every file "
            "still holds the patched content; otherwise restore the files by hand "
            f"from {workdir(tree) / 'backup'}",
        ) from exc
    if journal.state not in (APPLYING, APPLIED, REVERTING):
        raise JournalDamaged(f"the journal {where} has unknown state "
                             f"{journal.state!r}", hint="see `dsv4patch status`")
    stored = stored_series(tree, journal)
    allowed = set(stored.footprint(journal.tree) if stored else footprint) | set(also)
    for record in journal.files:
        _check_record(tree, record, allowed)
    return journal


def _check_record(tree: Path, record: FileRecord, footprint: set[str]) -> None:
    rel = record.path
    real = tree.resolve()
    safe = (isinstance(rel, str) and rel in footprint and not rel.startswith("/")
            and ".." not in rel.split("/")
            and not (tree / rel).is_symlink()
            and resolves_inside(tree / rel, real))
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
