"""`revert`: undo exactly what each tree's journal recorded."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from dsv4patch import bases, lock, originals, restore, signals
from dsv4patch import journal as journal_mod
from dsv4patch import upgrade as upgrade_mod
from dsv4patch.errors import PatchError
from dsv4patch.hooks import step
from dsv4patch.journal import REVERTING, FileRecord, Journal
from dsv4patch.series import Series
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
        step("locked")
        plans = [_plan(series, tree, from_patches, dry_run) for tree in trees]
        report.trees = [TreeRevert(t.name, str(t.path), state, [r.path for r in recs])
                        for t, (state, recs, _) in zip(trees, plans, strict=True)]
        if all(state == "nothing to revert" for state, _, _ in plans):
            return report
        report.state = "would revert" if dry_run else "reverted"
        if dry_run:
            return report
        with signals.deferred("the revert finished first"):
            for tree, (state, _, _) in zip(trees, plans, strict=True):
                if state == "revert from the patches":
                    # Written for every tree first, so a run killed halfway
                    # resumes from the journals like any other revert.
                    originals.rebuild_journal(series, tree, REVERTING)
            for tree, (state, records, journal) in zip(trees, plans, strict=True):
                if state != "nothing to revert":
                    _commit(tree, records, journal)
        for entry in report.trees:
            if entry.state != "nothing to revert":
                entry.state = "reverted"
    return report


def _plan(series: Series, tree: Tree, from_patches: bool,
          dry_run: bool) -> tuple[str, list[FileRecord], Journal | None]:
    if upgrade_mod.pending(tree.path):
        if dry_run:
            return "would recover an interrupted upgrade, then revert", [], None
        # Back to one consistent series first; the revert then undoes it.
        with signals.deferred("the interrupted upgrade was recovered first"):
            log.info("%s: %s", tree.label,
                     upgrade_mod.recover(tree, series.footprint(tree.name)))
    try:
        journal = journal_mod.read(tree.path, series.footprint(tree.name))
    except journal_mod.JournalDamaged:
        if not from_patches:
            raise
        journal = None
    if journal is None:
        if from_patches:
            journal = originals.rebuild_journal(series, tree, REVERTING, dry_run=True)
            return "revert from the patches", journal.files, journal
        return _no_journal(series, tree, dry_run), [], None

    pending, edited = restore.sort_files(tree.path, journal)
    restore.refuse_edited(tree.path, edited)
    return "revert", pending, journal


def _no_journal(series: Series, tree: Tree, dry_run: bool) -> str:
    """Nothing recorded: fine if every touched file is original, else refuse."""
    manifest = bases.load(tree.name, series.bases[tree.name]["version"])
    changed = bases.differing(tree.path, manifest, series.footprint(tree.name))
    if changed:
        raise PatchError(
            f"{tree.label} has no apply journal, but {', '.join(changed[:3])} "
            "differ from the original",
            hint="if the series was applied and its journal lost, `dsv4patch "
            "revert --from-patches` restores the originals from the patches",
        )
    # A run killed before it changed any file may have left its scratch behind.
    if not dry_run:
        journal_mod.remove(tree.path)
    return "nothing to revert"


def _commit(tree: Tree, records: list[FileRecord], journal: Journal | None) -> None:
    if journal is not None and journal.state != REVERTING:
        journal.state = REVERTING
        journal_mod.write(tree.path, journal)
    step("revert-journal")
    restore.restore(tree.path, records)
    # An apply killed inside a rename leaves its scratch copy beside the file.
    restore.remove_scratch(tree.path, journal.files if journal else records)
    journal_mod.remove(tree.path)
    log.debug("%s: reverted %d files", tree.label, len(records))
