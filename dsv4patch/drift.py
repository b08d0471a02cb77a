"""Drift: every tracked file against the recorded base, in the manner of `rpm -V`.

Codes: `5` content differs (rpm's digest column), `M` mode differs (`5M` both),
`missing`, and `added` (present but not in the base). Build residue never counts
(bases.skipped). The series' own changes, recorded in the journal or found
applied, are listed apart from foreign ones. A foreign difference in a file the
series touches blocks an apply; others only warn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dsv4patch import bases, check, lock, native, variants
from dsv4patch import journal as journal_mod
from dsv4patch.files import sha256
from dsv4patch.journal import APPLIED
from dsv4patch.series import Series
from dsv4patch.stage import APPLIED as PATCH_APPLIED
from dsv4patch.trees import Tree, resolve


@dataclass
class Difference:
    path: str
    code: str
    blocking: bool


@dataclass
class TreeDrift:
    name: str
    path: str
    base: str
    variants: list[str]
    checked: int = 0
    expected_patched: int = 0
    differences: list[Difference] = field(default_factory=list)
    # Differences that are this series' own changes, kept apart.
    series_changes: list[Difference] = field(default_factory=list)


@dataclass
class DriftReport:
    trees: list[TreeDrift] = field(default_factory=list)

    @property
    def blocking(self) -> int:
        return sum(d.blocking for t in self.trees for d in t.differences)


def run(series: Series, given: dict[str, Path | None]) -> DriftReport:
    """Compare each tree with its recorded base; raise PatchError on a bad tree."""
    report = DriftReport()
    for name in given:
        if not series.for_tree(name) and given[name] is None:
            continue
        tree = resolve(name, given[name])
        with lock.locked([tree.path], shared=True):
            report.trees.append(compare(series, tree))
    return report


def scan(tree: Path) -> dict[str, str]:
    """{relpath: blob hash} of every file in `tree` that is not residue."""
    return {rel: bases.blob(tree / rel) or "" for rel in bases.walk(tree)}


def compare(series: Series, tree: Tree, found: dict[str, str] | None = None
            ) -> TreeDrift:
    """The drift of one tree; `found` is its scan() when the caller has one."""
    version = series.bases[tree.name]["version"]
    entries = bases.load_entries(tree.name, version)
    footprint = series.footprint(tree.name)
    found = scan(tree.path) if found is None else found
    result = TreeDrift(tree.name, str(tree.path), f"{tree.name} {version}",
                       variants.consistent(tree.name))

    codes = {}
    for rel in sorted(set(found) | set(entries)):
        result.checked += 1
        code = _code(tree.path / rel, found.get(rel), entries.get(rel))
        if code:
            codes[rel] = code
    ours = series_files(series, tree, [r for r in footprint if r in codes])
    for rel, code in codes.items():
        if rel in ours:
            result.series_changes.append(Difference(rel, code, False))
        else:
            result.differences.append(Difference(rel, code, rel in footprint))
    result.expected_patched = len(result.series_changes)
    return result


def series_files(series: Series, tree: Tree, changed: list[str]) -> set[str]:
    """Which of the `changed` footprint files hold this series' own content: the
    journal's recorded result, or, without a journal, a patch found applied."""
    if not changed:
        return set()
    try:
        journal = journal_mod.read(tree.path, series.footprint(tree.name))
    except journal_mod.JournalDamaged:
        journal = None
    if journal is not None:
        if journal.state != APPLIED:
            return set()
        return {r.path for r in journal.files
                if r.path in changed and sha256(tree.path / r.path) == r.after}
    ours: set[str] = set()
    patches = {p.file: p for p in series.for_tree(tree.name)}
    for outcome in check.classify(series, tree):
        if outcome.state == PATCH_APPLIED:
            ours |= set(patches[outcome.patch].paths)
        ours |= {rel for rel, state in outcome.files.items() if state == "applied"}
    created = native.series_creates(series, tree.name)
    ours |= {rel for rel, digest in created.items()
             if rel in changed and sha256(tree.path / rel) == digest}
    return ours & set(changed)


def _code(path: Path, current: str | None, expected: tuple[str, str] | None
          ) -> str | None:
    if current is None:
        return "missing"
    if expected is None:
        return "added"
    content = "5" if current != expected[1] else ""
    mode = "M" if bases.mode(path) != expected[0] else ""
    return content + mode or None
