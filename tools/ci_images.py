"""`make ci-images`: what .github/workflows/images.yml does inside each image, here.

For each of the four vllm-ascend v0.13.0rc3 variants: a fake root with that variant's
fingerprint and copies of the pristine trees at ROOT/vllm-workspace, dsv4patch run
from its wheel (not from this checkout) in the project venv pinned like the image,
then check, apply, verify, status --json, revert and status --json with --root, and
the same assertions the workflow makes. One summary line per variant; exit 1 if any
variant fails.

    python tools/ci_images.py [--variant NAME ...] [--wheel PATH] [--out DIR]
                              [--pristine DIR] [--keep]
    python tools/ci_images.py assert-status --state applied|pristine --variant NAME FILE

`assert-status` needs only the standard library: the workflow runs it in the images.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("DSV4PATCH_CACHE")
             or Path.home() / ".cache" / "dsv4patch")
VARIANTS = ("v0.13.0rc3", "v0.13.0rc3-openeuler", "v0.13.0rc3-a3",
            "v0.13.0rc3-a3-openeuler")
TREES = ("vllm", "vllm-ascend")
STEPS = ("check", "apply", "verify", "status", "revert")
# What the image's requirements pin among the packages the patched code imports.
PINNED = ("transformers", "fastapi", "xgrammar")
PYTHON = (3, 11)
# The answers of status's image identification that name one image.
IDENTIFIED = ("exact", "likely")
# Environment variables that would point dsv4patch at other trees than --root's.
CLEARED = ("DSV4PATCH_VLLM", "DSV4PATCH_VLLM_ASCEND", "PYTHONPATH")


# --- the assertions, shared with the workflow -------------------------------------


def status_problems(status: dict, state: str, variant: str) -> list[str]:
    """What in a `status --json` document contradicts `state` on `variant`."""
    problems = []
    image = status.get("image") or {}
    if image.get("image") != variant or image.get("confidence") not in IDENTIFIED:
        problems.append(f"the image is {image.get('image')!r} "
                        f"({image.get('confidence')}: {image.get('reason')}), "
                        f"expected {variant!r}")
    if status.get("series_needed") is not True:
        problems.append("status says the series is not needed")
    trees = {tree.get("name"): tree for tree in status.get("trees", [])}
    if set(trees) != set(TREES):
        problems.append(f"status reports trees {sorted(trees)}, "
                        f"expected {list(TREES)}")
    for name, tree in sorted(trees.items()):
        problems += [f"{name}: {problem}" for problem in
                     _tree_problems(tree, state, status.get("series_version"))]
    return problems


def _tree_problems(tree: dict, state: str, series_version: str | None) -> list[str]:
    files = tree.get("files", {})
    if state == "applied":
        expected = {"state": "applied", "journal": "applied",
                    "applied_series": series_version}
        wanted_files, wanted_patch = ("patched",), "applied"
    else:
        expected = {"state": "not applied", "journal": "none", "applied_series": None,
                    "note": ""}
        # Files the series adds are absent; a base file gone shows in the drift.
        wanted_files, wanted_patch = ("original", "absent"), "not applied"
    problems = [f"{key} is {tree.get(key)!r}, expected {value!r}"
                for key, value in expected.items() if tree.get(key) != value]
    drift = tree.get("drift") or {}
    foreign = [f"{d['code']} {d['path']}" for d in drift.get("differences", [])]
    if foreign:
        problems.append(f"drift from the base: {', '.join(foreign[:5])}")
    if state == "pristine" and drift.get("series_changes"):
        problems.append(f"{len(drift['series_changes'])} changes of the series remain")
    if not files:
        problems.append("no files listed")
    problems += [f"{path} is {value!r}, expected {' or '.join(wanted_files)}"
                 for path, value in sorted(files.items()) if value not in wanted_files]
    problems += [f"{patch} is {value!r}, expected {wanted_patch!r}"
                 for patch, value in sorted(tree.get("patches", {}).items())
                 if value != wanted_patch]
    return problems


def assert_status(path: Path, state: str, variant: str) -> int:
    problems = status_problems(json.loads(path.read_text()), state, variant)
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    if not problems:
        print(f"{path}: {state} on {variant}")
    return 1 if problems else 0


# --- the pinned environment ----------------------------------------------------------


def image_pins(vllm_ascend: Path) -> dict[str, str]:
    """{package: specifier} for PINNED, read from vllm-ascend's requirements.txt."""
    from packaging.requirements import Requirement

    pins = {}
    for line in (vllm_ascend / "requirements.txt").read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        requirement = Requirement(text)
        if requirement.name.lower() in PINNED:
            pins[requirement.name.lower()] = str(requirement.specifier)
    missing = set(PINNED) - set(pins)
    if missing:
        raise SystemExit("vllm-ascend's requirements.txt pins none of "
                         f"{sorted(missing)}")
    return pins


def installed(env: dict[str, str]) -> tuple[str, dict[str, str | None]]:
    """The Python version and the PINNED versions that the steps will see."""
    probe = ("import importlib.metadata as m, json, platform\n"
             "def v(n):\n"
             "    try:\n        return m.version(n)\n"
             "    except m.PackageNotFoundError:\n        return None\n"
             "print(json.dumps([platform.python_version(),\n"
             f"                  {{n: v(n) for n in {PINNED!r}}}]))")
    out = subprocess.run([sys.executable, "-c", probe], env=env, check=True,
                         capture_output=True, text=True, cwd=tempfile.gettempdir())
    version, packages = json.loads(out.stdout)
    return version, packages


def lowest(specifier: str) -> str | None:
    """The lower bound of a `>=X` specifier: the oldest release the image accepts."""
    for clause in specifier.split(","):
        if clause.strip().startswith(">="):
            return clause.strip()[2:].strip()
    return None


def image_requirement(name: str, specifier: str) -> str:
    """What to install for a pin the venv does not meet: the version the fake
    root's package metadata says the image has, so that what `status` reads and
    what `verify` runs agree; else the oldest release the pin allows."""
    from packaging.specifiers import SpecifierSet

    from tests.support import fakeroot

    claimed = {key.replace("_", "-"): value for key, value in fakeroot.PACKAGES.items()}
    version = claimed.get(name)
    if version is not None and version in SpecifierSet(specifier):
        return f"{name}=={version}"
    return f"{name}=={lowest(specifier)}" if lowest(specifier) else f"{name}{specifier}"


def pinned_environment(env: dict[str, str],
                       pins: dict[str, str]) -> tuple[str, dict[str, str]]:
    """Check the venv against the image's pins; add what it lacks in an overlay.
    Returns the description printed and the environment the steps run in.

    The project venv keeps vLLM's own pins (xgrammar 0.1.27, for one), which its
    tests run against; the image installs vllm-ascend after vLLM and so carries
    vllm-ascend's. What the venv does not meet goes into a directory of its own in
    the cache, first on PYTHONPATH for these runs only.
    """
    from packaging.specifiers import SpecifierSet

    python, versions = installed(env)
    if tuple(int(p) for p in python.split(".")[:2]) != PYTHON:
        raise SystemExit(f"the venv runs Python {python}; the images run "
                         f"{'.'.join(map(str, PYTHON))}")
    unmet = {name: spec for name, spec in pins.items()
             if versions[name] is None or versions[name] not in SpecifierSet(spec)}
    if unmet:
        wanted = [image_requirement(name, spec) for name, spec in sorted(unmet.items())]
        overlay = CACHE / "ci-images" / ("site-" + "-".join(wanted).replace("=", ""))
        if not overlay.is_dir():
            _install_overlay(overlay, wanted)
        env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [
            str(overlay), env.get("PYTHONPATH")])))
        python, versions = installed(env)
    described = []
    for name, spec in sorted(pins.items()):
        ok = versions[name] is not None and versions[name] in SpecifierSet(spec)
        where = " (overlay)" if name in unmet else ""
        described.append(f"{name} {versions[name]}{where} [{spec}]"
                         f"{'' if ok else ' NOT MET'}")
        if not ok:
            raise SystemExit(f"{name} {versions[name]} does not meet the image's "
                             f"{spec}")
    return f"Python {python}, " + ", ".join(described), env


def _install_overlay(overlay: Path, wanted: list[str]) -> None:
    """Install `wanted` into a scratch directory, then rename it into place: a
    run that starts meanwhile never sees a half-installed overlay."""
    overlay.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{overlay.name}.", dir=overlay.parent))
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", "--no-deps", "--target",
                        str(scratch), "-c", str(REPO / "tools" / "constraints.txt"),
                        *wanted], check=True)
        scratch.chmod(0o755)
        scratch.rename(overlay)
    except OSError:
        if not overlay.is_dir():  # not another run's overlay that won the race
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --- the wheel ----------------------------------------------------------------------


def find_wheel(given: Path | None) -> Path:
    """The wheel named, else `make wheel`'s for the checkout's version."""
    if given:
        return given
    match = re.search(r'^__version__ = "([^"]+)"', (REPO / "dsv4patch" /
                      "__init__.py").read_text(), re.M)
    wheel = REPO / "dist" / f"dsv4patch-{match[1] if match else '?'}-py3-none-any.whl"
    if not wheel.is_file():
        raise SystemExit(f"no {wheel.relative_to(REPO)}: run `make wheel` first")
    return wheel


def install_wheel(wheel: Path, target: Path, env: dict[str, str]) -> dict[str, str]:
    """Install the wheel alone into `target`; return the environment that runs it."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", "--no-deps", "--no-index",
                    "--target", str(target), str(wheel)], check=True)
    env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [str(target),
                                                             env.get("PYTHONPATH")])))
    probe = "import dsv4patch; print(dsv4patch.__file__)"
    out = subprocess.run([sys.executable, "-c", probe],
                         env=env, check=True, capture_output=True, text=True,
                         cwd=target)
    loaded = Path(out.stdout.strip())
    if target not in loaded.parents:
        raise SystemExit(f"dsv4patch loads from {loaded}, not from the wheel in "
                         f"{target}")
    return env


# --- the trees ----------------------------------------------------------------------


def footprint(tree: str) -> set[str]:
    """Every path the series' patches name for `tree` (written by apply)."""
    import tomllib

    manifest = tomllib.loads((REPO / "patches" / "series.toml").read_text())
    paths = set()
    for entry in manifest.get("patch", []):
        if entry.get("tree") != tree:
            continue
        for line in (REPO / "patches" / entry["file"]).read_text().splitlines():
            for prefix in ("--- a/", "+++ b/"):
                if line.startswith(prefix):
                    paths.add(line[len(prefix):].split("\t")[0])
    return paths


@dataclass
class Laid:
    """A tree as the fake root laid it: what must hold again after revert."""
    links: dict[str, tuple[int, int, int]]  # hard-linked file: (inode, mtime, size)
    added: dict[str, bytes]  # files the fake root added, such as _build_info.py


def files(top: Path) -> set[str]:
    """Every file under `top` but git's metadata and bytecode (verify compiles the
    touched files, as the interpreter would on first import)."""
    found = set()
    for root, dirs, names in os.walk(top):
        dirs[:] = [d for d in dirs if d not in (".git", "__pycache__")]
        found.update((Path(root) / n).relative_to(top).as_posix() for n in names)
    return found


def copy_written(pristine: Path, copy: Path, written: set[str]) -> Laid:
    """Replace the hard links of the files apply writes by real copies; record
    the rest, to prove afterwards that nothing wrote through a link into the
    pristine cache."""
    for rel in sorted(written):
        if (copy / rel).exists():
            (copy / rel).unlink()
            shutil.copy2(pristine / rel, copy / rel)
    theirs = files(pristine)
    links, added = {}, {}
    for rel in sorted(files(copy)):
        stat = (copy / rel).lstat()
        if rel not in theirs:
            added[rel] = (copy / rel).read_bytes()
        elif stat.st_ino == (pristine / rel).lstat().st_ino:
            links[rel] = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    return Laid(links, added)


def tree_differences(pristine: Path, copy: Path, laid: Laid) -> list[str]:
    """Every way `copy` is not byte-identical to `pristine` plus what the fake root
    added; a git clone must also show a clean `git status`."""
    ours, theirs = files(copy), files(pristine) | set(laid.added)
    found = [f"added {rel}" for rel in sorted(ours - theirs)]
    found += [f"missing {rel}" for rel in sorted(theirs - ours)]
    for rel in sorted(ours & theirs):
        if rel in laid.links:
            stat = (copy / rel).lstat()
            if (stat.st_ino, stat.st_mtime_ns, stat.st_size) != laid.links[rel]:
                found.append(f"written outside the series' files {rel}")
            continue
        before = laid.added.get(rel)
        if before is None:
            before = (pristine / rel).read_bytes()
        if (copy / rel).read_bytes() != before:
            found.append(f"differs {rel}")
    if (copy / ".git").is_dir():
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=copy,
                               capture_output=True, text=True, check=True).stdout
        found += [f"git status: {line}" for line in dirty.splitlines()]
    return found


def build_root(variant: str, root: Path, pristine: Path) -> dict[str, Laid]:
    """A fake root of `variant` laid out like the image: os-release, CANN, package
    metadata, the SoC in vllm-ascend's build info, vLLM a git clone tagged
    v0.13.0, the pristine trees at ROOT/vllm-workspace and what the image's
    builds leave in them (fakeroot.RESIDUE), which the assertions must pass."""
    from tests.support import fakeroot

    fakeroot.build(root, variant, pristine / "vllm", pristine / "vllm-ascend",
                   link=True, git_clone=True, residue=True)
    return {tree: copy_written(pristine / tree, root / "vllm-workspace" / tree,
                               footprint(tree))
            for tree in TREES}


# --- one variant --------------------------------------------------------------------


@dataclass
class Outcome:
    variant: str
    done: list[str] = field(default_factory=list)
    failure: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        verdict = "ok" if not self.failure else "FAILED"
        return (f"{self.variant:<24} {verdict:<6} {' '.join(self.done) or '-':<36} "
                f"{self.seconds:5.1f} s")


def run_variant(variant: str, work: Path, out: Path, env: dict[str, str],
                pristine: Path) -> Outcome:
    outcome = Outcome(variant)
    started = time.monotonic()
    root = work / variant
    log = out / f"{variant}.log"
    try:
        laid = build_root(variant, root, pristine)
        _steps(variant, root, env, out, log, outcome)
        for tree in TREES:
            differences = tree_differences(pristine / tree,
                                           root / "vllm-workspace" / tree, laid[tree])
            if differences:
                shown = "; ".join(differences[:5])
                more = (f" and {len(differences) - 5} more"
                        if len(differences) > 5 else "")
                raise StepFailed(f"{tree} after revert is not pristine: {shown}{more}")
    except StepFailed as exc:
        outcome.failure = str(exc)
    outcome.seconds = time.monotonic() - started
    return outcome


class StepFailed(Exception):
    pass


def _steps(variant: str, root: Path, env: dict[str, str], out: Path, log: Path,
           outcome: Outcome) -> None:
    """The workflow's steps, with --root; the status documents go to `out`."""
    dsv4patch = Path(env["PYTHONPATH"].split(os.pathsep)[0]) / "bin" / "dsv4patch"
    where = ["--root", str(root)]
    with log.open("w") as handle:
        for step in STEPS:
            output = _run([str(dsv4patch), step, *where,
                           *(["--json"] if step == "status" else [])], env, handle)
            if step == "status":
                _check_status(output, out / f"status-{variant}.json", "applied",
                              variant)
            outcome.done.append(step)

        output = _run([str(dsv4patch), "status", *where, "--json"], env, handle)
        _check_status(output, out / f"status-{variant}-reverted.json", "pristine",
                      variant)


def _run(command: list[str], env: dict[str, str], log: IO[str]) -> str:
    """Run one step, log it, return its stdout; raise StepFailed on a non-zero exit."""
    log.write(f"$ {' '.join(command)}\n")
    result = subprocess.run(command, env=env, capture_output=True, text=True,
                            cwd=tempfile.gettempdir())
    log.write(f"{result.stdout}{result.stderr}[exit {result.returncode}]\n")
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise StepFailed(f"{command[1]} exited {result.returncode}: {' | '.join(tail)}")
    return result.stdout


def _check_status(output: str, saved: Path, state: str, variant: str) -> None:
    saved.write_text(output)
    problems = status_problems(json.loads(output), state, variant)
    if problems:
        shown = "; ".join(problems[:3])
        raise StepFailed(f"status is not {state} ({saved.name}): {shown}")


# --- the command line -----------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    check = sub.add_parser("assert-status", help="check a `status --json` document")
    check.add_argument("--state", choices=("applied", "pristine"), required=True)
    check.add_argument("--variant", choices=VARIANTS, required=True)
    check.add_argument("file", type=Path)
    parser.add_argument("--variant", action="append", choices=VARIANTS,
                        help="run only this variant (repeatable); default all four")
    parser.add_argument("--wheel", type=Path,
                        help="default: make wheel's dist/dsv4patch-VERSION-*.whl")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "ci-images",
                        help="status documents and logs [build/ci-images]")
    parser.add_argument("--keep", action="store_true", help="keep the fake roots")
    parser.add_argument("--pristine", type=Path, default=CACHE / "pristine",
                        help="the pristine trees [$DSV4PATCH_CACHE/pristine]")
    args = parser.parse_args(argv)
    if args.command == "assert-status":
        return assert_status(args.file, args.state, args.variant)
    return run(args.variant or list(VARIANTS), args.wheel, args.out, args.keep,
               args.pristine)


def run(variants: list[str], wheel: Path | None, out: Path, keep: bool,
        pristine: Path) -> int:
    if not all((pristine / tree).is_dir() for tree in TREES):
        raise SystemExit(f"no pristine trees in {pristine}: run `make pristine` first")
    sys.path.insert(0, str(REPO))  # tests.support.fakeroot
    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}

    described, env = pinned_environment(env, image_pins(pristine / "vllm-ascend"))
    print(f"environment: {described}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="dsv4patch-ci-images-"))
    try:
        env = install_wheel(find_wheel(wheel), work / "wheel", env)
        outcomes = []
        for variant in variants:
            outcome = run_variant(variant, work, out, env, pristine)
            outcomes.append(outcome)
            print(outcome.line(), flush=True)
            if outcome.failure:
                print(f"  {outcome.failure} (log: {out / (variant + '.log')})",
                      file=sys.stderr, flush=True)
            if not keep:
                shutil.rmtree(work / variant, ignore_errors=True)
    finally:
        if keep:
            print(f"fake roots kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if any(o.failure for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
