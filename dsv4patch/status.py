"""`status`: what the journal says, checked against the files as they are now."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dsv4patch import (
    bases,
    check,
    fingerprint,
    identify,
    known,
    lock,
    native,
    upgrade,
    variants,
)
from dsv4patch import drift as drift_mod
from dsv4patch import journal as journal_mod
from dsv4patch.drift import TreeDrift
from dsv4patch.errors import PatchError
from dsv4patch.files import sha256
from dsv4patch.fingerprint import Fingerprint
from dsv4patch.identify import Identification
from dsv4patch.journal import APPLIED, Journal
from dsv4patch.series import Series
from dsv4patch.stage import APPLIES, PARTLY
from dsv4patch.trees import Tree, resolve

PATCHED, ORIGINAL, EDITED = "patched", "original", "edited after apply"


@dataclass
class TreeStatus:
    name: str
    path: str
    state: str = ""
    shape: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    variants: list[str] = field(default_factory=list)
    applied_series: str | None = None
    journal: str = "none"
    note: str = ""
    patches: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    # Why the series is not needed here, when the tree supports DeepSeek-V4 itself.
    native: str = ""
    # The drift report: every file that differs from the base, rpm -V style.
    drift: TreeDrift | None = None


@dataclass
class StatusReport:
    series_version: str
    trees: list[TreeStatus] = field(default_factory=list)
    root: str = "/"
    environment: Fingerprint | None = None
    image: Identification | None = None
    series_needed: bool = True


def run(series: Series, given: dict[str, Path | None],
        root: Path = Path("/")) -> StatusReport:
    """Describe each tree and the image it matches; raise PatchError only when a
    tree cannot be found."""
    report = StatusReport(series.version, root=str(root))
    scans: dict[str, dict[str, str] | None] = {}
    ascend: Path | None = None
    for name in [n for n in given if series.for_tree(n)]:
        tree = resolve(name, given[name])
        ascend = tree.path if name == "vllm-ascend" else ascend
        # Shared with other readers; a live apply or revert is waited for, so
        # its journal is never mistaken for an interrupted one.
        with lock.locked([tree.path], shared=True):
            scans[name] = drift_mod.scan(tree.path)
            report.trees.append(_tree(series, tree, scans[name]))
    report.environment = fingerprint.read(root, ascend)
    report.image = identify.run(report.environment, scans)
    report.series_needed = not any(t.native for t in report.trees)
    return report


def _tree(series: Series, tree: Tree, scan: dict[str, str]) -> TreeStatus:
    status = TreeStatus(tree.name, str(tree.path), shape=tree.shape,
                        versions=tree.versions,
                        variants=variants.consistent(tree.name))
    found = native.detect(tree, series)
    if found is not None:
        # Another release: a file-by-file list against 0.13.0 would say nothing.
        status.state, status.native = "not needed", found.reason
        return status
    # TODO(dsv4patch): compare with the matched profile's manifest once profiles
    # of one series name different trees; remove when a second base is recorded.
    status.drift = drift_mod.compare(series, tree, scan)
    try:
        journal = journal_mod.read(tree.path, series.footprint(tree.name))
    except journal_mod.JournalDamaged as exc:
        status.journal, status.note = "damaged", exc.message
        journal = None
    if journal is not None:
        _from_journal(series, tree, journal, status)
    else:
        _from_files(series, tree, status)
    return status


def _from_journal(series: Series, tree: Tree, journal: Journal,
                  status: TreeStatus) -> None:
    status.journal, status.applied_series = journal.state, journal.series_version
    for record in journal.files:
        current = sha256(tree.path / record.path)
        status.files[record.path] = (PATCHED if current == record.after else
                                     ORIGINAL if current == record.before else EDITED)
    for patch in series.for_tree(tree.name):
        states = {status.files.get(rel, "unknown") for rel in patch.paths}
        status.patches[patch.file] = (
            "applied" if states == {PATCHED} else
            "not applied" if states == {ORIGINAL} else PARTLY)
    status.note = upgrade.note(series, tree.path, journal)
    if journal.state != APPLIED:
        status.note = (f"a run that was {journal.state} was interrupted; "
                       "`dsv4patch apply` or `dsv4patch revert` finishes the "
                       "recovery")
    values = set(status.files.values())
    status.state = ("interrupted" if journal.state != APPLIED
                    or upgrade.pending(tree.path) else
                    "applied" if values == {PATCHED} else
                    "edited after apply" if EDITED in values else PARTLY)


def _from_files(series: Series, tree: Tree, status: TreeStatus) -> None:
    base = series.bases[tree.name]["version"]
    try:
        manifest = bases.load(tree.name, base)
    except PatchError:
        manifest = {}
    for rel in series.footprint(tree.name):
        current = bases.blob(tree.path / rel)
        status.files[rel] = ("absent" if current is None else
                             ORIGINAL if current == manifest.get(rel) else
                             f"differs from {tree.name} {base}")
    for outcome in check.classify(series, tree):
        status.patches[outcome.patch] = (
            "not applied" if outcome.state == APPLIES else outcome.state)
    states = set(status.patches.values())
    status.state = ("not applied" if states == {"not applied"} else
                    "applied without a journal" if states == {"already applied"}
                    else PARTLY if states <= {"not applied", "already applied", PARTLY}
                    else "conflicts")
    status.note = known.describe(series, tree) or status.note
    if journal_mod.workdir(tree.path).exists() and status.journal == "none":
        status.note = ("a .dsv4patch directory without a journal is left from a run "
                       "killed before it changed any file; apply or revert removes it")
