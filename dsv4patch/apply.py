"""`apply`: the whole series across both trees, all or nothing."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from dsv4patch import bases, git, lock, originals, restore, signals, variants
from dsv4patch import journal as journal_mod
from dsv4patch.errors import PatchError
from dsv4patch.files import (
    bytecode_of,
    copy_durable,
    install,
    remove_bytecode,
    sha256,
    writable_problem,
)
from dsv4patch.hooks import step
from dsv4patch.journal import APPLIED, FileRecord, Journal
from dsv4patch.series import Series
from dsv4patch.stage import Stage
from dsv4patch.trees import Tree, check_base, resolve

log = logging.getLogger(__name__)


@dataclass
class TreeResult:
    name: str
    path: str
    state: str
    files: list[FileRecord] = field(default_factory=list)
    recovered: bool = False


@dataclass
class ApplyReport:
    series_version: str
    state: str
    trees: list[TreeResult] = field(default_factory=list)


def run(series: Series, given: dict[str, Path | None], dry_run: bool) -> ApplyReport:
    """Apply the series; return what happened per tree. Raises PatchError."""
    report = ApplyReport(series.version, "nothing to do")
    names = [name for name in given if series.for_tree(name)]
    if not names:
        return report
    git.executable()

    trees = [resolve(name, given[name]) for name in names]
    with lock.locked([t.path for t in trees]):
        step("locked")
        return _run_locked(series, trees, dry_run, report)


def preview(series: Series, trees: list[Tree]) -> ApplyReport:
    """Everything `apply --dry-run` checks, for a caller already holding the
    locks: `check` uses it so that its verdict is the one apply would reach."""
    return _run_locked(series, trees, True, ApplyReport(series.version, "nothing "
                                                        "to do"))


def _run_locked(series: Series, trees: list[Tree], dry_run: bool,
                report: ApplyReport) -> ApplyReport:
    with contextlib.ExitStack() as stages:
        report.trees = [_settle_journal(series, tree, dry_run) for tree in trees]
        pending = [(tree, result)
                   for tree, result in zip(trees, report.trees, strict=True)
                   if result.state == "pending"]
        if not pending:
            recovering = any(result.state.startswith("would roll back")
                             for result in report.trees)
            report.state = "would apply" if recovering else "already applied"
            return report

        plans = [_plan(series, tree, stages) for tree, _ in pending]
        report.state = "would apply" if dry_run else "applied"
        for (_, result), plan in zip(pending, plans, strict=True):
            result.state, result.files = report.state, plan.records
        if not dry_run:
            _commit(series, plans)
    return report


@dataclass
class Plan:
    tree: Tree
    stage: Stage
    records: list[FileRecord]


def _settle_journal(series: Series, tree: Tree, dry_run: bool) -> TreeResult:
    """Recover an interrupted run; say whether this tree still needs the series."""
    result = TreeResult(tree.name, str(tree.path), "pending")
    journal = journal_mod.read(tree.path, series.footprint(tree.name))
    if journal is None:
        journal = _adopt(series, tree, dry_run)
        if journal is None:
            return result
    if journal.state != APPLIED:
        if dry_run:
            log.info("%s: an earlier run was interrupted; apply would roll it back",
                     tree.label)
            result.state = "would roll back an interrupted run, then apply"
            return result
        log.info("%s: an earlier run was interrupted; rolling it back", tree.label)
        restore.roll_back(tree.path, journal)
        result.recovered = True
        return result

    if journal.series_digest != series.digest:
        raise PatchError(
            f"{tree.label} carries series {journal.series_version} "
            f"({journal.series_digest[:12]}), not this one ({series.digest[:12]})",
            hint="`dsv4patch revert` undoes it from its journal; then apply this one",
        )
    drifted = [r.path for r in journal.files
               if sha256(tree.path / r.path) != r.after]
    if drifted:
        raise PatchError(
            f"{tree.label} is partly applied: {', '.join(drifted[:5])} no longer "
            "hold the patched content",
            hint="`dsv4patch status` shows each file; `dsv4patch revert` names "
            "edited files",
        )
    result.state, result.files = "already applied", journal.files
    return result


def _adopt(series: Series, tree: Tree, dry_run: bool) -> Journal | None:
    """A tree that holds the whole series but lost its journal gets it back."""
    manifest = bases.load(tree.name, series.bases[tree.name]["version"])
    if not bases.differing(tree.path, manifest, series.footprint(tree.name)):
        return None
    try:
        journal = originals.rebuild_journal(series, tree, APPLIED, dry_run)
    except PatchError:
        return None  # not simply applied; planning explains what is wrong
    log.warning("%s: the series was applied but its journal was missing; %s it "
                "from the patches", tree.label, "would rebuild" if dry_run else
                "rebuilt")
    return journal


def _plan(series: Series, tree: Tree, stages: contextlib.ExitStack) -> Plan:
    """Check the base, writability and every patch on a stage kept for commit."""
    footprint = series.footprint(tree.name)
    _refuse_escapes(tree, footprint)
    check_base(tree, series.bases[tree.name]["version"], footprint)
    _refuse_read_only(tree, footprint)

    stage = stages.enter_context(Stage(tree.path, footprint))
    before = {rel: stage.hash(rel) for rel in footprint}
    for patch in series.for_tree(tree.name):
        stage.apply(patch)
        log.debug("%s: %s applies", tree.name, patch.file)
    records = [FileRecord(rel, before[rel], stage.hash(rel)) for rel in footprint]
    _refuse_syntax_errors(tree, stage, records)
    return Plan(tree, stage, records)


def _refuse_syntax_errors(tree: Tree, stage: Stage, records: list[FileRecord]) -> None:
    """Compile every patched module before it lands: a patch that applies
    cleanly can still leave code that no longer parses."""
    for record in records:
        if record.after is None or not record.path.endswith(".py"):
            continue
        try:
            compile((stage.root / record.path).read_bytes(), record.path, "exec",
                    dont_inherit=True)
        except (SyntaxError, ValueError) as exc:
            raise PatchError(f"the patched {record.path} in {tree.label} does not "
                             f"compile: {exc}", hint="fix the patch; nothing was "
                             "changed") from exc


def _commit(series: Series, plans: list[Plan]) -> None:
    """Back up, record intent, replace files, then mark every journal applied."""
    started: list[Plan] = []
    try:
        with signals.raising("every file this run touched was restored"):
            for plan in plans:
                _write_backups(plan)
            step("backup")
            for plan in plans:
                journal_mod.write(plan.tree.path, _new_journal(series, plan))
                started.append(plan)
            step("journal")
            for plan in plans:
                _replace_files(plan)
            step("replaced")
            for plan in plans:
                for record in plan.records:
                    remove_bytecode(plan.tree.path, record.path)
            step("bytecode")
            for plan in plans:
                journal = _new_journal(series, plan)
                journal.state, journal.finished = APPLIED, time.time()
                journal_mod.write(plan.tree.path, journal)
            step("committed")
    except BaseException:
        for plan in reversed(started):
            restore.roll_back(plan.tree.path, _new_journal(series, plan))
        for plan in plans:
            if plan not in started:
                journal_mod.remove(plan.tree.path)
        raise


def _new_journal(series: Series, plan: Plan) -> Journal:
    patches = {p.file: p.sha256 for p in series.for_tree(plan.tree.name)}
    return Journal(plan.tree.name, series.version, series.digest, patches,
                   plan.records, variants=variants.consistent(plan.tree.name))


def _write_backups(plan: Plan) -> None:
    journal_mod.prepare(plan.tree.path)
    for record in plan.records:
        if record.before is not None:
            copy_durable(plan.tree.path / record.path,
                         journal_mod.backup_path(plan.tree.path, record.path))


def _replace_files(plan: Plan) -> None:
    for number, record in enumerate(plan.records):
        target = plan.tree.path / record.path
        if record.after is None:
            target.unlink()
        else:
            install(plan.stage.root / record.path, target)
        if sha256(target) != record.after:
            raise PatchError(f"{target} did not reach its patched content after the "
                             "rename; every file was restored",
                             hint="check the file system for concurrent writers")
        log.debug("replaced %s", target)
        if number == 0:
            step("replace-first")


def _refuse_escapes(tree: Tree, footprint: list[str]) -> None:
    real = tree.path.resolve()
    for rel in footprint:
        target = (tree.path / rel).resolve()
        if not target.is_relative_to(real) or (tree.path / rel).is_symlink():
            raise PatchError(
                f"{rel} in {tree.label} resolves through a symlink to {target}",
                hint="the series only writes regular files inside the tree",
            )


def _refuse_read_only(tree: Tree, footprint: list[str]) -> None:
    places = {tree.path}
    for rel in footprint:
        target = tree.path / rel
        places.add(_nearest_dir(tree.path, rel))
        if target.exists():
            places.add(target)
        # Stale bytecode is deleted after the files are replaced; an undeletable
        # one must stop the run here, before anything changed.
        for stale in bytecode_of(tree.path, rel):
            places.update((stale.parent, stale))
    for place in sorted(places):
        problem = writable_problem(place)
        if problem:
            raise PatchError(f"{tree.label} is not writable: {problem}",
                             hint="run as the tree's owner, on a writable layer "
                             "(not a read-only mount or immutable file)")


def _nearest_dir(tree: Path, rel: str) -> Path:
    parent = (tree / rel).parent
    while not parent.is_dir():
        parent = parent.parent
    return parent
