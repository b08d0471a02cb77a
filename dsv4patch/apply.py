"""`apply`: the whole series across both trees, all or nothing."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from dsv4patch import bases, git, known, lock, originals, restore, signals, variants
from dsv4patch import journal as journal_mod
from dsv4patch import upgrade as upgrade_mod
from dsv4patch.errors import PatchError
from dsv4patch.files import (
    bytecode_of,
    copy_durable,
    install,
    prune_empty_dirs,
    remove_bytecode,
    resolves_inside,
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
    # The series version the tree carried before this run upgraded it.
    upgrade_from: str = ""


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
        settled = [_settle_journal(series, tree, dry_run) for tree in trees]
        report.trees = [result for result, _ in settled]
        pending = [(tree, result, previous)
                   for tree, (result, previous) in zip(trees, settled, strict=True)
                   if result.state == "pending"]
        if not pending:
            recovering = any(result.state.startswith("would r")
                             for result in report.trees)
            report.state = "would apply" if recovering else "already applied"
            return report

        plans = [_plan(series, tree, stages, previous)
                 for tree, _, previous in pending]
        upgrading = any(plan.upgrade for plan in plans)
        report.state = ("would " if dry_run else "") + (
            ("upgrade" if dry_run else "upgraded") if upgrading else
            ("apply" if dry_run else "applied"))
        for (_, result, previous), plan in zip(pending, plans, strict=True):
            result.files = plan.records
            result.state = "would apply" if dry_run else "applied"
            if previous is not None:
                result.upgrade_from = previous.series_version
                result.state = (f"{'would upgrade' if dry_run else 'upgraded'} "
                                f"{previous.series_version} -> {series.version}")
        if not dry_run:
            _commit(series, plans)
    return report


@dataclass
class Plan:
    tree: Tree
    stage: Stage
    records: list[FileRecord]
    upgrade: upgrade_mod.UpgradePlan | None = None

    @property
    def moves(self) -> list[FileRecord]:
        """The files this run replaces, `before` being what they hold now."""
        return self.upgrade.moves if self.upgrade else self.records


def _settle_journal(series: Series, tree: Tree,
                    dry_run: bool) -> tuple[TreeResult, Journal | None]:
    """Recover an interrupted run; say whether this tree still needs the series,
    and return the journal of an older series this run would upgrade."""
    result = TreeResult(tree.name, str(tree.path), "pending")
    if upgrade_mod.pending(tree.path):
        if dry_run:
            result.state = "would recover an interrupted upgrade first"
            return result, None
        with signals.deferred("the interrupted upgrade was recovered first"):
            log.info("%s: %s", tree.label,
                     upgrade_mod.recover(tree, series.footprint(tree.name)))
        result.recovered = True
    journal = journal_mod.read(tree.path, series.footprint(tree.name))
    if journal is None:
        journal = _adopt(series, tree, dry_run)
        if journal is None:
            return result, None
    if journal.state != APPLIED:
        if dry_run:
            log.info("%s: an earlier run was interrupted; apply would roll it back",
                     tree.label)
            result.state = "would roll back an interrupted run, then apply"
            return result, None
        log.info("%s: an earlier run was interrupted; rolling it back", tree.label)
        restore.roll_back(tree.path, journal)
        result.recovered = True
        return result, None

    if journal.series_digest != series.digest:
        upgrade_mod.decide(series, tree, journal)
        return result, journal
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
    return result, None


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


def _plan(series: Series, tree: Tree, stages: contextlib.ExitStack,
          previous: Journal | None = None) -> Plan:
    """Check the base, writability and every patch on a stage kept for commit."""
    if previous is not None:
        return _plan_upgrade(series, tree, stages, previous)
    footprint = series.footprint(tree.name)
    _refuse_escapes(tree, footprint)
    known.refuse(series, tree)
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


def _plan_upgrade(series: Series, tree: Tree, stages: contextlib.ExitStack,
                  previous: Journal) -> Plan:
    """The same checks for a tree that carries an older series: on its originals."""
    paths = list(dict.fromkeys([r.path for r in previous.files]
                               + series.footprint(tree.name)))
    _refuse_escapes(tree, paths)
    _refuse_read_only(tree, paths)
    stage = stages.enter_context(Stage(tree.path, paths))
    kept = stages.enter_context(Stage(tree.path, paths))
    upgrade = upgrade_mod.plan(series, tree, previous, stage, kept)
    _refuse_syntax_errors(tree, stage, upgrade.records)
    return Plan(tree, stage, upgrade.records, upgrade)


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
    """Back up, record intent, replace files, then mark every journal applied.

    An upgrade records its intent in its own guard journal and switches the
    tree's journal to the new series last, so until then the old one holds.
    """
    started: list[Plan] = []
    try:
        with signals.raising("every file this run touched was restored"):
            for plan in plans:
                if plan.upgrade:
                    upgrade_mod.write_backups(plan.tree.path, plan.upgrade)
                else:
                    _write_backups(plan)
                journal_mod.store_series(plan.tree.path, series)
            step("backup")
            for plan in plans:
                if plan.upgrade:
                    upgrade_mod.write_guard(plan.tree.path, upgrade_mod.guard(
                        series, plan.tree, plan.upgrade))
                else:
                    journal_mod.write(plan.tree.path, _new_journal(series, plan))
                started.append(plan)
            step("journal")
            for plan in plans:
                _replace_files(plan)
            step("replaced")
            for plan in plans:
                for record in plan.moves:
                    remove_bytecode(plan.tree.path, record.path)
            step("bytecode")
            for plan in plans:
                journal = _new_journal(series, plan)
                journal.state, journal.finished = APPLIED, time.time()
                journal_mod.write(plan.tree.path, journal)
            step("committed")
    except BaseException:
        for plan in reversed(started):
            if plan.upgrade:
                upgrade_mod.roll_back(plan.tree.path, upgrade_mod.guard(
                    series, plan.tree, plan.upgrade), plan.upgrade.previous)
            else:
                restore.roll_back(plan.tree.path, _new_journal(series, plan))
        for plan in plans:
            if plan in started:
                continue
            if plan.upgrade:
                upgrade_mod.finish(plan.tree.path, plan.upgrade.previous)
            else:
                journal_mod.remove(plan.tree.path)
        raise
    # Past the switch every tree carries the new series; what is left is
    # tidying, which a later run would also finish.
    with signals.deferred("the upgrade was finished first"):
        for plan in plans:
            if plan.upgrade:
                upgrade_mod.finish(plan.tree.path, _new_journal(series, plan))


def _new_journal(series: Series, plan: Plan) -> Journal:
    patches = {p.file: p.sha256 for p in series.for_tree(plan.tree.name)}
    return Journal(plan.tree.name, series.version, series.digest, patches,
                   plan.records, variants=variants.consistent(plan.tree.name),
                   series_copy=journal_mod.copy_name(series.digest),
                   upgraded_from=plan.upgrade.previous.series_version
                   if plan.upgrade else "")


def _write_backups(plan: Plan) -> None:
    journal_mod.prepare(plan.tree.path)
    for record in plan.records:
        if record.before is not None:
            copy_durable(plan.tree.path / record.path,
                         journal_mod.backup_path(plan.tree.path, record.path))


def _replace_files(plan: Plan) -> None:
    for number, record in enumerate(plan.moves):
        target = plan.tree.path / record.path
        if record.after is None:
            # An upgrade removes what only the old series added, and the
            # directories that held nothing else.
            target.unlink(missing_ok=True)
            prune_empty_dirs(plan.tree.path, record.path)
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
        if (tree.path / rel).is_symlink() or not resolves_inside(tree.path / rel, real):
            raise PatchError(
                f"{rel} in {tree.label} is a symlink or resolves through one "
                "out of the tree",
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
