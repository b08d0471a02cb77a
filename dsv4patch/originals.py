"""Recovering the originals from the patches when no journal is left.

The series is reversed, last patch first, on a stage holding the current files;
the result is trusted only if every file then matches the recorded base byte for
byte. The recovered originals become the backups of a fresh journal, so the
ordinary journal-driven revert can take over.
"""

from __future__ import annotations

import time

from dsv4patch import bases
from dsv4patch import journal as journal_mod
from dsv4patch.errors import PatchError
from dsv4patch.files import copy_durable, sha256
from dsv4patch.journal import FileRecord, Journal
from dsv4patch.series import Series
from dsv4patch.stage import Stage
from dsv4patch.trees import Tree


def rebuild_journal(series: Series, tree: Tree, state: str,
                    dry_run: bool = False) -> Journal:
    """Return (and unless dry_run, write with its backups) the journal that an
    apply of `series` would have left; raise PatchError if the files disagree."""
    manifest = bases.load(tree.name, series.bases[tree.name]["version"])
    footprint = series.footprint(tree.name)
    with Stage(tree.path, footprint) as stage:
        for patch in reversed(series.for_tree(tree.name)):
            if not stage.unapply(patch):
                raise PatchError(
                    f"{patch.file} does not reverse cleanly in {tree.label}",
                    hint="the files do not hold the patched content; restore them "
                    "from a pristine tree (`dsv4patch drift` lists them)")
        wrong = [rel for rel in footprint
                 if bases.blob(stage.root / rel) != manifest.get(rel)]
        if wrong:
            raise PatchError(f"reversing the series in {tree.label} does not give "
                             f"the originals of {', '.join(wrong[:3])}",
                             hint="restore these files from a pristine tree")

        # The manifest holds git blob hashes; the journal keeps sha256s.
        records = [FileRecord(rel, stage.hash(rel), sha256(tree.path / rel))
                   for rel in footprint]
        journal = Journal(tree.name, series.version, series.digest,
                          {p.file: p.sha256 for p in series.for_tree(tree.name)},
                          records, state=state, finished=time.time())
        if not dry_run:
            journal_mod.prepare(tree.path)
            for record in records:
                if record.before is not None:
                    copy_durable(stage.root / record.path,
                                 journal_mod.backup_path(tree.path, record.path))
            journal_mod.write(tree.path, journal)
    return journal
