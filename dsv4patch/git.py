"""The one place that runs git (or any other program).

Every call is an argv list with an explicit working directory and a scrubbed
environment. Repository discovery is fenced with GIT_CEILING_DIRECTORIES so that
a scratch directory inside somebody else's checkout is never mistaken for a
repository: there `git apply` would skip every hunk and still exit 0.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dsv4patch.errors import PatchError

log = logging.getLogger(__name__)

# Variables that would point git at another repository or index than intended.
_SCRUBBED = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
             "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_PREFIX")


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def executable() -> str:
    """Return the git binary's path; raise PatchError when there is none."""
    found = shutil.which("git")
    if found is None:
        raise PatchError(
            "git was not found on PATH",
            hint="install git (apt-get install git / yum install git) and retry",
        )
    return found


def _env(fence: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env["GIT_CEILING_DIRECTORIES"] = str(fence)
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    env["GIT_CONFIG_GLOBAL"] = os.devnull
    env["LC_ALL"] = "C"
    return env


def run(args: list[str], cwd: Path, stdin: bytes | None = None) -> Result:
    """Run `git ARGS` in `cwd` with discovery fenced at cwd's parent."""
    argv = [executable(), *args]
    log.debug("git: (cd %s && %s)", cwd, shlex.join(["git", *args]))
    done = subprocess.run(
        argv, cwd=cwd, input=stdin, capture_output=True,
        env=_env(cwd.resolve().parent),
    )
    stdout = done.stdout.decode("utf-8", "replace")
    stderr = done.stderr.decode("utf-8", "replace")
    if stderr.strip():
        log.debug("git stderr:\n%s", _indent(stderr))
    return Result(argv, done.returncode, stdout, stderr)


def run_program(argv: list[str], cwd: Path, env: dict[str, str],
                timeout: float) -> Result:
    """Run another program (the target's Python, for `verify`) without a shell.

    A run that outlives `timeout` is killed and reported as return code -1.
    """
    log.debug("run: (cd %s && %s)", cwd, shlex.join(argv))
    try:
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return Result(argv, -1, "", f"killed after {timeout:.0f} seconds")
    except OSError as exc:
        raise PatchError(f"cannot run {argv[0]}: {exc.strerror or exc}",
                         hint="name an executable Python with --python") from exc
    return Result(argv, done.returncode, done.stdout.decode("utf-8", "replace"),
                  done.stderr.decode("utf-8", "replace"))


def apply(stage: Path, patch: bytes, *, check: bool = False, reverse: bool = False,
          include: str | None = None) -> Result:
    """`git apply` one patch to the plain files under `stage`, never fuzzily."""
    args = ["apply", "--verbose", "--whitespace=nowarn"]
    if check:
        args.append("--check")
    if reverse:
        args.append("--reverse")
    if include is not None:
        args.append(f"--include={include}")
    return run([*args, "-"], cwd=stage, stdin=patch)


def tags_at_head(tree: Path) -> list[str]:
    """Return the tags of `tree`'s own repository that point at its HEAD.

    GitPython reads the refs and objects in-process, so identifying a clone costs
    no git process; the images' vLLM tree is a depth-1 clone of its tag.
    """
    if not (tree / ".git").exists():
        return []

    # GitPython probes for a git binary on import; a missing one must surface as
    # our own PatchError from executable(), not as an ImportError here.
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    import git as gitpython
    from git.db import GitDB

    try:
        with gitpython.Repo(tree, odbt=GitDB, search_parent_directories=False) as repo:
            head = repo.head.commit
            tags = sorted(tag.name for tag in repo.tags if tag.commit == head)
    except (gitpython.GitError, ValueError, OSError) as exc:
        log.debug("git: cannot read the tags of %s: %s", tree, exc)
        return []
    return tags


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())
