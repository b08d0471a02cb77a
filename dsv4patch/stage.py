"""Scratch copies of the files a series touches, where patches are tried first.

A stage is a plain directory outside every repository (discovery is fenced in
git.py), holding copies of one tree's footprint files. Patches are applied
there, in order, so checks are cumulative and the real tree is only touched
once every patch is known to apply.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from dsv4patch import git
from dsv4patch.errors import PatchError
from dsv4patch.files import sha256
from dsv4patch.series import Patch

APPLIES, APPLIED, PARTLY, CONFLICT = "applies", "already applied", "partly applied", \
    "conflicts"
PREFIX = "dsv4patch-stage-"
_FAILED_AT = re.compile(r"^error: patch failed: (.+):(\d+)$", re.M)
_CHECKING = re.compile(r"^Checking patch (.+)\.\.\.$", re.M)
_FILE_ERROR = re.compile(r"^error: (.+?): (already exists in working directory|"
                         r"does not exist in index|No such file or directory|"
                         r"patch does not apply|does not match index)$", re.M)


@dataclass
class Outcome:
    patch: str
    state: str
    problems: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)


class Stage:
    """A temporary copy of `paths` from `tree`."""

    def __init__(self, tree: Path, paths: list[str]) -> None:
        _sweep()
        self.root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        for rel in paths:
            source = tree / rel
            if source.is_file():
                (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, self.root / rel)

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def hash(self, rel: str) -> str | None:
        return sha256(self.root / rel)

    def apply(self, patch: Patch) -> None:
        """Apply `patch`; raise PatchError naming the conflict."""
        result = self._apply(patch)
        if result.returncode != 0:
            problems = conflicts(patch, result.stderr)
            raise PatchError(f"patch {patch.file} does not apply: {problems[0]}",
                             hint="`dsv4patch check` lists every conflict")

    def _apply(self, patch: Patch) -> git.Result:
        # git apply changes all of a patch's files or none of them, so a failed
        # attempt leaves the stage as it was and needs no separate --check.
        before = {rel: self.hash(rel) for rel in patch.paths}
        result = git.apply(self.root, patch.data)
        if result.returncode != 0:
            return result
        _refuse_skips(patch, result.stderr)
        refuse_unparsed(patch, result.stderr)
        unchanged = [rel for rel in patch.paths if self.hash(rel) == before[rel]]
        if unchanged:
            raise PatchError(f"patch {patch.file} left {unchanged[0]} unchanged",
                             hint="the patch is empty for that file; regenerate it")
        return result

    def unapply(self, patch: Patch) -> bool:
        """Reverse-apply `patch` if it reverses cleanly; say whether it did."""
        result = git.apply(self.root, patch.data, reverse=True)
        if result.returncode == 0:
            refuse_unparsed(patch, result.stderr)
        return result.returncode == 0 and "Skipped patch" not in result.stderr

    def classify(self, patch: Patch) -> Outcome:
        """Say whether `patch` applies here, is applied, partly, or conflicts.

        A patch that applies is applied to the stage, so the next patch is
        checked on top of it.
        """
        forward = self._apply(patch)
        if forward.returncode == 0:
            return Outcome(patch.file, APPLIES)
        if git.apply(self.root, patch.data, check=True, reverse=True).returncode == 0:
            return Outcome(patch.file, APPLIED)
        return self._per_file(patch, forward.stderr)

    def _per_file(self, patch: Patch, stderr: str) -> Outcome:
        states: dict[str, str] = {}
        for rel in patch.paths:
            if git.apply(self.root, patch.data, check=True,
                         include=rel).returncode == 0:
                states[rel] = "not applied"
            elif git.apply(self.root, patch.data, check=True, reverse=True,
                           include=rel).returncode == 0:
                states[rel] = "applied"
            else:
                states[rel] = "conflicts"
        if "conflicts" not in states.values():
            return Outcome(patch.file, PARTLY, files=states)
        return Outcome(patch.file, CONFLICT, conflicts(patch, stderr), states)


def _sweep() -> None:
    """Remove stages left by runs that were killed; their pid is in the name."""
    for stale in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        pid = stale.name[len(PREFIX):].split("-")[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def conflicts(patch: Patch, stderr: str) -> list[str]:
    """Turn git's complaints into `file, hunk N (line L)` sentences."""
    found: list[str] = []
    by_path = {f.path: f for f in patch.files}
    for match in _FAILED_AT.finditer(stderr):
        rel, line = match[1], int(match[2])
        number = by_path[rel].hunk_at(line) if rel in by_path else None
        label = f"hunk #{number}" if number else "a hunk"
        found.append(f"{rel}: {label} at line {line} does not match")
    for match in _FILE_ERROR.finditer(stderr):
        if match[2] != "patch does not apply":
            found.append(f"{match[1]}: {match[2]}")
    return found or [stderr.strip().splitlines()[-1] if stderr.strip()
                     else "git apply failed without a message"]


def refuse_unparsed(patch: Patch, stderr: str) -> None:
    """Refuse a patch in which git found files that parse_diff did not.

    Only the parsed files are backed up, installed and journaled; a section git
    reads but the parser skipped (say, one before the first `diff --git`) would
    change the stage and then silently never reach the tree.
    """
    seen = set(_CHECKING.findall(stderr))
    if seen != set(patch.paths):
        extra = sorted(seen ^ set(patch.paths))
        raise PatchError(f"patch {patch.file}: git and dsv4patch disagree on the "
                         f"files it changes ({', '.join(extra[:3])})",
                         hint="every change needs its own `diff --git` section; "
                         "regenerate the patch with git diff")


def _refuse_skips(patch: Patch, stderr: str) -> None:
    # git prints this and exits 0 when it believes the paths are outside its
    # repository; the fence should prevent it, and it must never pass as success.
    if "Skipped patch" in stderr:
        raise PatchError(f"git skipped {patch.file} instead of applying it",
                         hint="GIT_CEILING_DIRECTORIES did not fence the stage; "
                         "report this with the output of -v")
