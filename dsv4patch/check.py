"""`check`: a cumulative dry run of the whole series; it changes nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dsv4patch import apply as apply_mod
from dsv4patch import git, known, lock, native, overrides, variants
from dsv4patch import journal as journal_mod
from dsv4patch import upgrade as upgrade_mod
from dsv4patch.errors import PatchError
from dsv4patch.series import Series
from dsv4patch.stage import APPLIED, APPLIES, Outcome, Stage
from dsv4patch.trees import Tree, check_base, path_for, resolve

UPGRADE = "would upgrade"


@dataclass
class TreeCheck:
    name: str
    path: str
    shape: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    variants: list[str] = field(default_factory=list)
    journal: str = "none"
    problem: str | None = None
    # Set when the tree supports DeepSeek-V4 itself: the reason apply refuses.
    native: str = ""
    patches: list[Outcome] = field(default_factory=list)
    # The older (or other) series the journal says is applied; apply upgrades it.
    carries: str = ""


@dataclass
class CheckReport:
    series_version: str
    state: str
    trees: list[TreeCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    refusal: str | None = None


def run(series: Series, given: dict[str, Path | None]) -> CheckReport:
    """Check every patch on staged copies; the state is `applies`, `already
    applied` or `blocked`."""
    git.executable()
    report = CheckReport(series.version, "nothing to do")
    names = [n for n in given if series.for_tree(n)]
    found = [path_for(n, given[n]) for n in names]
    with lock.locked([p for p in found if p.is_dir()], shared=True):
        for name in names:
            report.trees.append(check_tree(series, name, given[name]))
        ascend = path_for("vllm-ascend", given.get("vllm-ascend"))
        if (ascend / overrides.PATCH_DIR).is_dir():
            report.notes = overrides.find(series, ascend)

        outcomes = [o.state for t in report.trees for o in t.patches]
        upgrading = any(t.carries for t in report.trees)
        if any(t.problem for t in report.trees) or not (outcomes or upgrading):
            report.state = "blocked" if report.trees else "nothing to do"
        elif upgrading and all(s in (APPLIES, APPLIED) for s in outcomes):
            report.state = UPGRADE
        elif all(state == APPLIES for state in outcomes):
            report.state = APPLIES
        elif all(state == APPLIED for state in outcomes):
            report.state = APPLIED
        else:
            report.state = "blocked"
        if report.state in (APPLIES, APPLIED, UPGRADE):
            _preflight(series, names, given, report)
    return report


def _preflight(series: Series, names: list[str], given: dict[str, Path | None],
               report: CheckReport) -> None:
    """Run apply's own checks short of writing: the patches applying is not
    enough when a file is edited, immutable, a symlink, or stops compiling."""
    try:
        apply_mod.preview(series, [resolve(name, given[name]) for name in names])
    except PatchError as exc:
        report.state = "blocked"
        report.refusal = f"apply would refuse: {exc.message}"


def check_tree(series: Series, name: str, given: Path | None) -> TreeCheck:
    """Classify each patch of one tree; record a missing tree or wrong base."""
    try:
        tree = resolve(name, given)
    except PatchError as exc:
        return TreeCheck(name, str(path_for(name, given)), problem=exc.message)
    result = TreeCheck(name, str(tree.path), tree.shape, tree.versions,
                       variants.consistent(tree.name), _journal_state(series, tree))
    result.carries = upgrade_mod.carried(series, tree)
    if result.carries:
        return result  # apply's preflight checks the series on the originals
    found = native.detect(tree, series)
    if found is not None:
        result.native = result.problem = f"{native.NOT_NEEDED}: {found.reason}"
        return result  # another release: its patches say nothing useful
    footprint = series.footprint(name)
    try:
        check_base(tree, series.bases[name]["version"], footprint)
    except PatchError as exc:
        result.problem = exc.message
    result.patches = classify(series, tree)
    if result.problem and all(o.state == APPLIED for o in result.patches):
        result.problem = None  # applied without a journal: the edits are ours
    if result.journal == "none":
        result.problem = known.describe(series, tree) or result.problem
    return result


def _journal_state(series: Series, tree: Tree) -> str:
    """The journal's state; an interrupted run is rolled back by the next apply."""
    try:
        journal = journal_mod.read(tree.path, series.footprint(tree.name))
    except journal_mod.JournalDamaged:
        return "damaged"
    return "none" if journal is None else journal.state


def classify(series: Series, tree: Tree) -> list[Outcome]:
    """Forward pass in order; where that fails, a reverse pass from the end
    finds the patches that are already in the tree."""
    patches = series.for_tree(tree.name)
    footprint = series.footprint(tree.name)
    with Stage(tree.path, footprint) as stage:
        forward = [stage.classify(patch) for patch in patches]
    if all(o.state == APPLIES for o in forward):
        return forward

    with Stage(tree.path, footprint) as stage:
        for index in reversed(range(len(patches))):
            if not stage.unapply(patches[index]):
                break
            forward[index] = Outcome(patches[index].file, APPLIED)
    return forward
