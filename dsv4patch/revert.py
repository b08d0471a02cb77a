"""`revert`: undo exactly what each tree's journal recorded."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from dsv4patch import bases, lock, restore
from dsv4patch import journal as journal_mod
from dsv4patch.apply import signals_raise
from dsv4patch.errors import PatchError
from dsv4patch.files import install, sha256
from dsv4patch.journal import REVERTING, FileRecord, Journal
from dsv4patch.series import Series
from dsv4patch.stage import Stage
from dsv4patch.trees import Tree, resolve

log = logging.getLogger(__name__)


@dataclass
class TreeRevert:
    name: str
    path: str
    state: str
    files: list[str] = field(default_factory=list)


@dataclass
class RevertReport:
    state: str
    trees: list[TreeRevert] = field(default_factory=list)


def run(series: Series, given: dict[str, Path | None], dry_run: bool,
        from_patches: bool) -> RevertReport:
    """Revert both trees; refuse before changing anything if any file was edited."""
    names = [n for n in given if series.for_tree(n) or given[n] is not None]
    trees = [resolve(name, given[name]) for name in names]
    report = RevertReport("nothing to revert")
    with lock.locked([t.path for t in trees]):
        plans = [_plan(series, tree, from_patches) for tree in trees]
        report.trees = [TreeRevert(t.name, str(t.path), state, [r.path for r in recs])
                        for t, (state, recs, _) in zip(trees, plans, strict=True)]
        if all(state == "nothing to revert" for state, _, _ in plans):
            return report
        report.state = "would revert" if dry_run else "reverted"
        if dry_run:
            return report
        with signals_raise():
            for tree, (state, records, journal) in zip(trees, plans, strict=True):
                if journal is None and state != "nothing to revert":
                    records = _from_patches(series, tree, keep_backups=True)
                if state != "nothing to revert":
                    _commit(tree, records, journal)
        for entry in report.trees:
            if entry.state != "nothing to revert":
                entry.state = "reverted"
    return report


def _plan(series: Series, tree: Tree,
          from_patches: bool) -> tuple[str, list[FileRecord], Journal | None]:
    try:
        journal = journal_mod.read(tree.path)
    except journal_mod.JournalDamaged:
        if not from_patches:
            raise
        journal = None
    if journal is None:
        if from_patches:
            return "revert from the patches", _from_patches(series, tree), None
        return _no_journal(series, tree), [], None

    pending, edited = restore.sort_files(tree.path, journal)
    restore.refuse_edited(tree.path, edited)
    return "revert", pending, journal


def _no_journal(series: Series, tree: Tree) -> str:
    """Nothing recorded: fine if every touched file is original, else refuse."""
    manifest = bases.load(tree.name, series.bases[tree.name]["version"])
    changed = [rel for rel in series.footprint(tree.name)
               if sha256(tree.path / rel) != manifest.get(rel)]
    if changed:
        raise PatchError(
            f"{tree.label} has no apply journal, but {', '.join(changed[:3])} "
            "differ from the original",
            hint="if the series was applied and its journal lost, `dsv4patch "
            "revert --from-patches` restores the originals from the patches",
        )
    # A run killed before it changed any file may have left its scratch behind.
    journal_mod.remove(tree.path)
    return "nothing to revert"


def _from_patches(series: Series, tree: Tree,
                  keep_backups: bool = False) -> list[FileRecord]:
    """Reverse the series on a stage; accept only if that yields the originals."""
    manifest = bases.load(tree.name, series.bases[tree.name]["version"])
    footprint = series.footprint(tree.name)
    with Stage(tree.path, footprint) as stage:
        for patch in reversed(series.for_tree(tree.name)):
            if not stage.unapply(patch):
                raise PatchError(
                    f"{patch.file} does not reverse cleanly in {tree.label}",
                    hint="the files do not hold the patched content; restore them "
                    "from a pristine tree (see `dsv4patch drift`)")
        wrong = [rel for rel in footprint if stage.hash(rel) != manifest.get(rel)]
        if wrong:
            raise PatchError(f"reversing the series in {tree.label} does not give "
                             f"the originals of {', '.join(wrong[:3])}",
                             hint="restore these files from a pristine tree")
        records = [FileRecord(rel, manifest.get(rel), sha256(tree.path / rel))
                   for rel in footprint]
        if not keep_backups:
            return records
        # Keep the originals as backups so the shared restore path can use them.
        journal_mod.prepare(tree.path)
        for record in records:
            if record.before is not None:
                install(stage.root / record.path,
                        journal_mod.backup_path(tree.path, record.path))
    return records


def _commit(tree: Tree, records: list[FileRecord], journal: Journal | None) -> None:
    if journal is not None:
        journal.state = REVERTING
        journal_mod.write(tree.path, journal)
    restore.restore(tree.path, records)
    journal_mod.remove(tree.path)
    log.info("%s: reverted %d files", tree.label, len(records))
