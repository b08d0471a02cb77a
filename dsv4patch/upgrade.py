"""Replacing the series a tree carries with a newer one, in one step.

The files go back to their originals (the journal's backups, which are exact;
the stored copy of the old series, reversed, where a backup is lost), the new
series is applied to those on a stage, and the result is committed by apply's
own steps. While that runs, `.dsv4patch/upgrade/` holds a second journal whose
`before` is the old series' content, with copies of those files; the tree's
journal keeps describing the old series until the switch. A run that stops
before the switch is rolled back to the old series from there; one that stops
after it only has that directory left to tidy.

Only a newer version upgrades. An older one, or the same version with other
bytes, is refused: both would silently replace what an operator chose to apply.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from dsv4patch import bases
from dsv4patch import journal as journal_mod
from dsv4patch import restore as restore_mod
from dsv4patch.errors import PatchError
from dsv4patch.files import copy_durable, prune_empty_dirs, sha256
from dsv4patch.journal import APPLIED, FileRecord, Journal
from dsv4patch.series import Series
from dsv4patch.stage import Stage
from dsv4patch.trees import Tree, check_base

log = logging.getLogger(__name__)

_RELEASE = re.compile(r"^(\d+(?:\.\d+)*)(.*)$")


def version_key(version: str) -> tuple[tuple[int, ...], int, str]:
    """Order series versions: dotted numbers first; a suffix such as `-rc1`
    sorts before the plain release, as pre-releases do."""
    match = _RELEASE.match(version.strip())
    if not match:
        return (), 0, version
    numbers = tuple(int(n) for n in match[1].split("."))
    while numbers and numbers[-1] == 0:
        numbers = numbers[:-1]
    suffix = match[2]
    return numbers, 0 if suffix else 1, suffix


def decide(series: Series, tree: Tree, journal: Journal) -> None:
    """Allow an upgrade from `journal`'s series to `series`; raise otherwise."""
    old, new = journal.series_version, series.version
    if version_key(new) > version_key(old):
        return
    if version_key(new) < version_key(old):
        raise PatchError(
            f"{tree.label} carries series {old}, newer than this release's {new}; "
            "refusing to downgrade",
            hint=f"use the dsv4patch release that ships {old}, or `dsv4patch "
            f"revert` first and then apply {new}",
        )
    raise PatchError(
        f"{tree.label} carries series {old} ({journal.series_digest[:12]}), and "
        f"this release's {new} has other patches ({series.digest[:12]})",
        hint="two different series must not share a version; `dsv4patch revert` "
        "undoes the applied one, then apply this one",
    )


def workdir(tree: Path) -> Path:
    return journal_mod.workdir(tree) / "upgrade"


def journal_path(tree: Path) -> Path:
    return workdir(tree) / "journal.json"


def backups(tree: Path) -> Path:
    return workdir(tree) / "backup"


@dataclass
class UpgradePlan:
    """What an upgrade of one tree will do; `records` is the journal it ends
    with, `moves` the one that guards the switch (before = the old series)."""

    previous: Journal
    originals: Stage
    records: list[FileRecord]
    moves: list[FileRecord]


def plan(series: Series, tree: Tree, previous: Journal, stage: Stage,
         originals: Stage) -> UpgradePlan:
    """Put the originals on both stages and the new series on `stage`.

    Both stages were made from the tree's current files over the union of the
    old journal's files and the new footprint. Raises PatchError when a file
    was edited after apply or the new series does not apply to the originals.
    """
    pending, edited = restore_mod.sort_files(tree.path, previous)
    restore_mod.refuse_edited(tree.path, edited)
    unpatched = [r.path for r in previous.files if r not in pending
                 and r.before != r.after]
    if unpatched:
        raise PatchError(
            f"{tree.label} is partly applied: {', '.join(unpatched[:5])} no longer "
            f"hold the content of series {previous.series_version}",
            hint="`dsv4patch status` shows each file; `dsv4patch revert` gives "
            "back the originals, then apply this series")

    paths = list(dict.fromkeys([r.path for r in previous.files]
                               + series.footprint(tree.name)))
    current = {rel: sha256(tree.path / rel) for rel in paths}
    _put_originals(tree, previous, originals)
    _mirror(originals, stage, paths)

    footprint = series.footprint(tree.name)
    version = series.bases[tree.name]["version"]
    check_base(tree, version, [])  # the version claims; the files are checked below
    manifest = bases.load(tree.name, version)
    edited_base = bases.differing(originals.root, manifest, footprint)
    if edited_base:
        raise PatchError(
            f"{tree.label} has local edits in files the series touches: "
            f"{', '.join(edited_base[:5])}",
            hint=f"save your edits elsewhere and restore these files to the "
            f"{version} originals; `dsv4patch drift` lists every difference")

    before = {rel: originals.hash(rel) for rel in paths}
    for patch in series.for_tree(tree.name):
        stage.apply(patch)
    after = {rel: stage.hash(rel) for rel in paths}
    records = [FileRecord(rel, before[rel], after[rel]) for rel in footprint]
    moves = [FileRecord(rel, current[rel], after[rel]) for rel in paths]
    return UpgradePlan(previous, originals, records, moves)


def _put_originals(tree: Tree, previous: Journal, stage: Stage) -> None:
    """Replace the old series' files on `stage` with their originals."""
    lost: list[FileRecord] = []
    for record in previous.files:
        target = stage.root / record.path
        if record.before is None:
            target.unlink(missing_ok=True)
            continue
        backup = journal_mod.backup_path(tree.path, record.path)
        if sha256(backup) != record.before:
            lost.append(record)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(backup, target)
    if lost:
        _originals_from_copy(tree, previous, stage, lost)


def _mirror(source: Stage, dest: Stage, paths: list[str]) -> None:
    """Make `dest` hold exactly what `source` holds for `paths`."""
    for rel in paths:
        target = dest.root / rel
        if (source.root / rel).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source.root / rel, target)
        else:
            target.unlink(missing_ok=True)


def _originals_from_copy(tree: Tree, previous: Journal, stage: Stage,
                         lost: list[FileRecord]) -> None:
    """Reverse the stored copy of the old series for files whose backup is gone;
    keep the result only where it hashes to the recorded original."""
    stored = journal_mod.stored_series(tree.path, previous)
    names = ", ".join(r.path for r in lost[:3])
    if stored is None:
        raise PatchError(f"the backups of {names} in {tree.label} are missing or "
                         "damaged, and the journal keeps no copy of its series",
                         hint=f"restore {names} from a pristine tree")
    with Stage(tree.path, [r.path for r in previous.files]) as scratch:
        for patch in reversed(stored.for_tree(tree.name)):
            if not scratch.unapply(patch):
                raise PatchError(f"the backups of {names} in {tree.label} are lost "
                                 f"and {patch.file} of the stored series "
                                 f"{stored.version} does not reverse",
                                 hint=f"restore {names} from a pristine tree")
        for record in lost:
            if scratch.hash(record.path) != record.before:
                raise PatchError(f"the backup of {record.path} in {tree.label} is "
                                 "lost, and reversing the stored series does not "
                                 "give back its original",
                                 hint=f"restore {record.path} from a pristine tree")
            shutil.copy2(scratch.root / record.path, stage.root / record.path)
        log.warning("%s: rebuilt the original of %s from the stored series %s",
                    tree.label, names, stored.version)


def write_backups(tree: Path, upgrade: UpgradePlan) -> None:
    """Keep the old series' files for a rollback, and every original the new
    journal needs (a lost backup is rewritten from the checked original)."""
    journal_mod.prepare(tree)
    workdir(tree).mkdir(exist_ok=True)
    for record in upgrade.moves:
        if record.before is not None:
            copy_durable(tree / record.path, backups(tree) / record.path)
    for record in upgrade.records:
        backup = journal_mod.backup_path(tree, record.path)
        if record.before is not None and sha256(backup) != record.before:
            copy_durable(upgrade.originals.root / record.path, backup)


def guard(series: Series, tree: Tree, upgrade: UpgradePlan) -> Journal:
    """The journal that guards the switch, written under `upgrade/`."""
    return Journal(tree.name, series.version, series.digest,
                   {p.file: p.sha256 for p in series.for_tree(tree.name)},
                   upgrade.moves, series_copy=journal_mod.copy_name(series.digest),
                   upgraded_from=upgrade.previous.series_version)


def write_guard(tree: Path, journal: Journal) -> None:
    journal_mod.write_to(journal_path(tree), journal)


def finish(tree: Path, journal: Journal) -> None:
    """After the switch: drop the guard, the old series' copy and stale backups."""
    shutil.rmtree(workdir(tree), ignore_errors=True)
    tidy(tree, journal)


def tidy(tree: Path, journal: Journal) -> None:
    """Remove series copies and backups that `journal` does not name."""
    keep = journal_mod.workdir(tree) / journal.series_copy \
        if journal.series_copy else None
    copies = journal_mod.workdir(tree) / "series"
    for entry in sorted(copies.iterdir()) if copies.is_dir() else []:
        if entry != keep:
            shutil.rmtree(entry, ignore_errors=True)
    wanted = {r.path for r in journal.files if r.before is not None}
    root = journal_mod.workdir(tree) / "backup"
    for backup in sorted(root.rglob("*")) if root.is_dir() else []:
        rel = backup.relative_to(root).as_posix()
        if backup.is_file() and rel not in wanted:
            backup.unlink()
            prune_empty_dirs(root, rel)


def roll_back(tree: Path, guard_journal: Journal, previous: Journal) -> None:
    """Put the old series' files back and the old journal in force."""
    pending, edited = restore_mod.sort_files(tree, guard_journal)
    restore_mod.refuse_edited(tree, edited)
    restore_mod.restore(tree, pending, backups(tree))
    restore_mod.remove_scratch(tree, guard_journal.files)
    # The old journal goes back even where the switch never happened: an
    # atomic rewrite of the same record is cheaper than deciding.
    journal_mod.write(tree, previous)
    shutil.rmtree(workdir(tree), ignore_errors=True)
    tidy(tree, previous)


def _target_digest(tree: Path) -> str | None:
    """The digest of the series the guard was upgrading to; None without one."""
    try:
        digest = json.loads(journal_path(tree).read_text())["series_digest"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise journal_mod.JournalDamaged(
            f"the upgrade journal {journal_path(tree)} is damaged "
            f"({type(exc).__name__})",
            hint="the tree's own journal and its backups under "
            f"{journal_mod.workdir(tree)} still describe the old series") from exc
    if not isinstance(digest, str):
        raise journal_mod.JournalDamaged(
            f"the upgrade journal {journal_path(tree)} is damaged",
            hint="see `dsv4patch status`")
    return digest


def pending(tree: Path) -> bool:
    return workdir(tree).exists()


def recover(tree: Tree, footprint: list[str]) -> str | None:
    """Finish or undo an upgrade that was stopped; say which, None if none was.

    Raises JournalDamaged when the tree's journal cannot be read, and
    PatchError when a file was edited since.
    """
    if not pending(tree.path):
        return None
    main = journal_mod.read(tree.path, footprint)
    if main is None:
        raise journal_mod.JournalDamaged(
            f"{workdir(tree.path)} is left from an upgrade, but "
            f"{journal_mod.path(tree.path)} is missing",
            hint="restore the files from the backups under "
            f"{journal_mod.workdir(tree.path)} by hand")
    target = _target_digest(tree.path)
    if target is None:
        # Stopped before the guard was written: no file had changed yet.
        shutil.rmtree(workdir(tree.path), ignore_errors=True)
        tidy(tree.path, main)
        return "removed the leftovers of an upgrade stopped before it began"
    if main.series_digest == target:
        # Past the switch only directories are removed, so the guard's file
        # list (which names files of a journal already replaced) is not needed.
        finish(tree.path, main)
        return f"finished the upgrade to series {main.series_version}"
    guard_journal = journal_mod.read_file(journal_path(tree.path), tree.path,
                                          footprint,
                                          also=tuple(r.path for r in main.files))
    if guard_journal is None:
        raise journal_mod.JournalDamaged(f"{journal_path(tree.path)} vanished "
                                         "while it was read", hint="rerun")
    roll_back(tree.path, guard_journal, main)
    return (f"rolled back an interrupted upgrade to series "
            f"{guard_journal.series_version}; series {main.series_version} "
            "stays applied")


def note(series: Series, tree: Path, journal: Journal) -> str:
    """What `status` says about a journal of another series, or an upgrade
    left half done; empty when the journal is this series and nothing is left."""
    if pending(tree):
        return ("an upgrade was interrupted; `dsv4patch apply` or `dsv4patch "
                "revert` finishes the recovery, and until then series "
                f"{journal.series_version} is the one recorded")
    if journal.series_digest == series.digest:
        return ""
    old, new = journal.series_version, series.version
    if version_key(new) > version_key(old):
        return f"would upgrade {old} -> {new} (`dsv4patch apply`)"
    if version_key(new) < version_key(old):
        return (f"series {old} is newer than this release's {new}; apply refuses "
                "to downgrade it")
    return (f"series {old} was applied from other patch files than this release's "
            f"{new}; revert it before applying this one")


def carried(series: Series, tree: Tree) -> str:
    """The version of another series the tree's journal says is applied, or ''."""
    try:
        journal = journal_mod.read(tree.path, series.footprint(tree.name))
    except journal_mod.JournalDamaged:
        return ""
    if journal is None or journal.state != APPLIED:
        return ""
    return journal.series_version if journal.series_digest != series.digest else ""
