"""`verify`: after apply, prove that the patched trees load and behave.

File checks run here: the journal says this release's series is applied, every
touched file still has the hash the journal recorded after apply, no conflict
markers or stray `.rej`/`.orig` files, and which touched vLLM modules
vllm-ascend also replaces at runtime (a warning). Code checks run in the
target's own Python (`--python`, else $DSV4PATCH_PYTHON, else the interpreter
running dsv4patch) through target_checks.py, with the trees first on PYTHONPATH:
byte-compile every touched .py file, import every touched vLLM module, load the
vllm-ascend platform plugin, and run the encoder and parsers on the golden
samples shipped in dsv4patch/golden/.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from dsv4patch import git, known, lock, native, overrides
from dsv4patch import journal as journal_mod
from dsv4patch.errors import PatchError
from dsv4patch.files import bytecode_of, sha256
from dsv4patch.journal import APPLIED
from dsv4patch.series import Series
from dsv4patch.trees import Tree, resolve

PASS, FAIL, SKIP, WARN = "pass", "fail", "skip", "warn"
PACKAGE_DIR = Path(__file__).resolve().parent
CHECK_SCRIPT = PACKAGE_DIR / "target_checks.py"
GOLDEN_DIR = PACKAGE_DIR / "golden"
# Importing vLLM's serving modules takes ~10 s on a small machine; a step that
# needs 10 minutes is hung.
STEP_TIMEOUT = 600.0
# Lines that git, diff3 and patch leave where a merge did not resolve. A bare
# "=======" is also a Markdown heading underline, so it counts only beside these.
CONFLICT_MARKS = (b"<<<<<<< ", b">>>>>>> ", b"||||||| ")
LEFTOVER_SUFFIXES = (".rej", ".orig")


@dataclass
class Check:
    name: str
    state: str
    detail: str = ""
    problems: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    series_version: str
    python: str
    state: str = ""
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.state == FAIL]


@dataclass
class _Patched:
    tree: Tree
    files: list[str]  # files the journal says exist after apply


def target_python(given: Path | None) -> str:
    """The interpreter the code checks run in; raise PatchError if unusable."""
    chosen = str(given or os.environ.get("DSV4PATCH_PYTHON") or sys.executable)
    if not (os.path.isfile(chosen) and os.access(chosen, os.X_OK)):
        raise PatchError(f"the target Python {chosen} is not an executable file",
                         hint="name the image's interpreter with --python PATH or "
                         "$DSV4PATCH_PYTHON")
    # The checks run in a scratch directory, where a relative path means nothing.
    return os.path.abspath(chosen)


def run(series: Series, given: dict[str, Path | None],
        python: Path | None = None) -> VerifyReport:
    """Check each tree of the series; the report's failed list is the verdict."""
    report = VerifyReport(series.version, target_python(python))
    trees = [resolve(name, given[name]) for name in given if series.for_tree(name)]
    with lock.locked([t.path for t in trees], shared=True):
        patched = [p for p in (_file_checks(series, t, report) for t in trees) if p]
        # Python would wait forever reading a pipe or fail on a directory there.
        odd = [rel for p in patched for rel in p.files
               if (p.tree.path / rel).exists() and not (p.tree.path / rel).is_file()]
        if len(patched) != len(trees):
            report.checks.append(Check("code", SKIP, "the series is not applied to "
                                       "every tree; nothing to load"))
        elif odd:
            report.checks.append(Check("code", SKIP, "not regular files, so nothing "
                                       f"is loaded: {', '.join(odd)}"))
        else:
            _code_checks(patched, report)
    report.state = "failed" if report.failed else "verified"
    return report


def verdict(report: VerifyReport) -> tuple[str, str]:
    """The error and hint for a failed report."""
    names = [c.name for c in report.failed]
    message = f"{len(names)} of {len(report.checks)} checks failed: {', '.join(names)}"
    if all(name.endswith(" journal") for name in names):
        return message, "apply the series with `dsv4patch apply`, then verify again"
    return message, "the FAIL lines above name each file or module"


def _file_checks(series: Series, tree: Tree, report: VerifyReport) -> _Patched | None:
    """Journal, hashes and leftovers of one tree; None when it is not patched."""
    name = f"{tree.name} journal"
    try:
        journal = journal_mod.read(tree.path, series.footprint(tree.name))
    except journal_mod.JournalDamaged as exc:
        report.checks.append(Check(name, FAIL, exc.message))
        return None
    if journal is None:
        report.checks.append(Check(name, FAIL, _unpatched(series, tree)))
        return None
    if journal.state != APPLIED:
        report.checks.append(Check(name, FAIL, f"a run that was {journal.state} was "
                                   "interrupted; see `dsv4patch status`"))
        return None
    if journal.patches != {p.file: p.sha256 for p in series.for_tree(tree.name)}:
        report.checks.append(Check(
            name, FAIL, f"series {journal.series_version} is applied, this release "
            f"carries {series.version}; `dsv4patch apply` brings it up to date"))
        return None

    files = [r.path for r in journal.files if r.after is not None]
    report.checks.append(Check(name, PASS, f"series {journal.series_version} "
                               f"applied, {_files(len(journal.files))}"))
    changed = [r.path for r in journal.files if sha256(tree.path / r.path) != r.after]
    report.checks.append(
        Check(f"{tree.name} hashes", FAIL if changed else PASS,
              f"{len(changed)} files differ from the hash recorded at apply: "
              f"{', '.join(changed)}" if changed else
              f"{_files(len(journal.files))} as recorded at apply", changed))
    report.checks.append(_leftovers(tree, files))
    return _Patched(tree, files)


def _unpatched(series: Series, tree: Tree) -> str:
    """Why a tree without a journal is not patched, and what to do about it."""
    found = native.detect(tree, series)
    if found is not None:
        return f"the series is not applied, and not needed: {found.reason}"
    earlier = known.describe(series, tree)
    if earlier:
        return f"the series is not applied: {earlier}"
    return (f"{tree.path} is not patched: it has no dsv4patch journal; run "
            "`dsv4patch apply`")


def _leftovers(tree: Tree, files: list[str]) -> Check:
    problems = []
    for rel in files:
        try:
            # A pipe would block the read; the hash check names it.
            if not (tree.path / rel).is_file():
                continue
            lines = (tree.path / rel).read_bytes().splitlines()
        except OSError:
            continue  # the hash check names a file that is gone or unreadable
        problems += [f"{pyc.relative_to(tree.path)}: stale bytecode Python never "
                     "checks against the source"
                     for pyc in bytecode_of(tree.path, rel)
                     if _unchecked_stale(pyc, tree.path / rel)]
        marked = [n for n, line in enumerate(lines, 1)
                  if line.startswith(CONFLICT_MARKS)]
        if marked:
            problems.append(f"{rel}:{marked[0]}: conflict marker")
    for directory in sorted({(tree.path / rel).parent for rel in files}):
        problems += [f"{p.relative_to(tree.path)}: stray file"
                     for p in sorted(directory.iterdir())
                     if p.name.endswith(LEFTOVER_SUFFIXES)]
    detail = "; ".join(problems) or (f"no conflict markers in {_files(len(files))}, "
                                     "no .rej or .orig beside them")
    return Check(f"{tree.name} leftovers", FAIL if problems else PASS, detail, problems)


def _unchecked_stale(pyc: Path, source: Path) -> bool:
    """Whether `pyc` is unchecked-hash bytecode that does not match `source`.

    Python trusts such a file without reading the source (PEP 552), so it would
    serve the code from before the apply; apply removes them, but a later
    `compileall --invalidation-mode unchecked-hash` writes them back. Another
    interpreter's file cannot be checked here and counts as stale.
    """
    try:
        header = pyc.read_bytes()[:16]
    except OSError:
        return False
    flags = int.from_bytes(header[4:8], "little")
    if len(header) < 16 or flags & 0b11 != 0b01:
        return False  # timestamp or checked-hash: Python checks it itself
    if f".{sys.implementation.cache_tag}." not in pyc.name:
        return True
    try:
        return header[8:16] != importlib.util.source_hash(source.read_bytes())
    except OSError:
        return True


def _files(count: int) -> str:
    return f"{count} file" + ("" if count == 1 else "s")


def _code_checks(patched: list[_Patched], report: VerifyReport) -> None:
    by_name = {p.tree.name: p for p in patched}
    vllm, ascend = by_name.get("vllm"), by_name.get("vllm-ascend")
    sources = [str(p.tree.path / rel) for p in patched for rel in p.files
               if rel.endswith(".py")]
    report.checks.append(_summarize("compile", _step(report.python, "compile", sources,
                                                     _path_of(vllm, ascend)),
                                    f"{len(sources)} touched .py files byte-compile"))
    if vllm is not None:
        modules = _modules(vllm.files)
        report.checks.append(_summarize(
            "import", _step(report.python, "import", modules, _path_of(vllm, ascend)),
            f"{len(modules)} patched vLLM modules import from {vllm.tree.path}"))
    if ascend is not None:
        path = _path_of(vllm, ascend, ascend_first=True)
        args = [str(p) for p in path] + ["--"] + _modules(vllm.files if vllm else [])
        report.checks.append(_summarize(
            "vllm-ascend plugin",
            _step(report.python, "plugin", args, path, plugins=True), ""))
        if vllm is not None:
            report.checks.append(_overrides(ascend.tree, _modules(vllm.files)))
    if vllm is not None:
        rows = _step(report.python, "golden", [str(GOLDEN_DIR)],
                     _path_of(vllm, ascend))
        report.checks.append(_summarize("golden", rows, _golden_text(rows)))


def _modules(files: list[str]) -> list[str]:
    names = [overrides.module_of(rel) for rel in files]
    return [n for n in names if n]


def _path_of(vllm: _Patched | None, ascend: _Patched | None,
             ascend_first: bool = False) -> list[Path]:
    order = [ascend, vllm] if ascend_first else [vllm, ascend]
    return [p.tree.path for p in order if p is not None]


def _step(python: str, step: str, args: list[str], path: list[Path],
          plugins: bool = False) -> list[dict]:
    """Run one step of target_checks.py; its rows, or one failed row saying why.

    Only the plugin step lets vLLM load its installed plugins: elsewhere an empty
    VLLM_PLUGINS keeps the platform unresolved, so no device stack is touched.
    """
    env = dict(os.environ)
    if not plugins:
        env["VLLM_PLUGINS"] = ""
    env["PYTHONPATH"] = os.pathsep.join(
        [str(p) for p in path] + [v for v in [env.get("PYTHONPATH")] if v])
    # Read-only on the trees, and never a network call for a tokenizer.
    env.update(PYTHONDONTWRITEBYTECODE="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    with tempfile.TemporaryDirectory(prefix="dsv4patch-verify-") as scratch:
        out = Path(scratch) / "result.json"
        done = git.run_program([python, str(CHECK_SCRIPT), step, str(out), *args],
                               cwd=Path(scratch), env=env, timeout=STEP_TIMEOUT)
        try:
            return list(json.loads(out.read_text("utf-8")))
        except (OSError, ValueError):
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return [{"name": step, "state": FAIL,
                     "detail": f"{python} exited with {done.returncode}: {tail}"}]


def _summarize(name: str, rows: list[dict], passed: str) -> Check:
    """One line for a step: its failures, else `passed` (or the rows' own
    details when empty) with whatever was skipped."""
    failed = [f"{r['name']}: {r['detail']}" for r in rows if r["state"] == FAIL]
    skipped = [f"{r['name']}: {r['detail']}" for r in rows if r["state"] == SKIP]
    if failed:
        return Check(name, FAIL, "; ".join(failed), failed)
    if skipped and len(skipped) == len(rows):
        return Check(name, SKIP, "; ".join(skipped), skipped)
    passed = passed or "; ".join(r["detail"] for r in rows if r["state"] == PASS)
    return Check(name, PASS, "; ".join([passed, *[f"skipped {s}" for s in skipped]]))


def _golden_text(rows: list[dict]) -> str:
    counts = []
    for kind, noun in (("encoder", "prompts encoded"), ("parsers", "outputs parsed")):
        done = [r for r in rows if r["name"].startswith(kind + " ")
                and r["state"] == PASS]
        how = sorted({r["detail"] for r in done})
        if done:
            counts.append(f"{len(done)} {noun} as recorded ({', '.join(how)})")
    return "; ".join(counts)


def _overrides(ascend: Tree, modules: list[str]) -> Check:
    found = overrides.in_modules(ascend.path, modules)
    if not found:
        return Check("runtime overrides", PASS, f"{overrides.PATCH_DIR} replaces "
                     "nothing in the patched modules")
    problems = [f"{module}: vllm-ascend assigns {target} at {where}"
                for module, target, where in found]
    return Check("runtime overrides", WARN, "; ".join(problems), problems)
