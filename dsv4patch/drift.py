"""`drift`: every tracked file against the recorded base, like `rpm -V`.

Codes: `5` content differs (rpm's digest column), `missing`, and `added`
(present but not in the base). Files the journal records as patched count as expected.
Differences in files the series touches block an apply; others only warn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dsv4patch import bases, lock, variants
from dsv4patch import journal as journal_mod
from dsv4patch.files import sha256
from dsv4patch.journal import APPLIED
from dsv4patch.series import Series
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
            report.trees.append(_tree(series, tree))
    return report


def _tree(series: Series, tree: Tree) -> TreeDrift:
    name = tree.name
    version = series.bases[name]["version"]
    manifest = bases.load(name, version)
    footprint = set(series.footprint(name))
    journal = journal_mod.read(tree.path, series.footprint(tree.name))
    patched = {r.path: r.after for r in journal.files} \
        if journal is not None and journal.state == APPLIED else {}
    result = TreeDrift(name, str(tree.path), f"{name} {version}",
                       variants.consistent(name))

    present = set(bases.walk(tree.path))
    for rel in sorted(present | set(manifest) | set(patched)):
        result.checked += 1
        if rel in patched and sha256(tree.path / rel) == patched[rel]:
            result.expected_patched += 1
            continue
        current = bases.blob(tree.path / rel) if rel in present else None
        code = _code(current, manifest.get(rel))
        if code:
            result.differences.append(Difference(rel, code, rel in footprint))
    return result


def _code(current: str | None, expected: str | None) -> str | None:
    if current is None:
        return "missing"
    if expected is None:
        return "added"
    return "5" if current != expected else None
