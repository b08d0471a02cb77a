"""The `dsv4patch` command line: options in, one library call, output out.

Only this module imports click, prints, or decides exit codes: 0 done or nothing
to do, 1 refused or failed (`Error:` and `hint:` on stderr), 2 usage, 3 internal
error (traceback in a log file), 130 interrupted.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from dsv4patch import __version__, hooks, native, render, signals
from dsv4patch import apply as apply_mod
from dsv4patch import check as check_mod
from dsv4patch import drift as drift_mod
from dsv4patch import revert as revert_mod
from dsv4patch import series as series_mod
from dsv4patch import status as status_mod
from dsv4patch import verify as verify_mod
from dsv4patch.errors import Interrupted, PatchError

EXIT_FAILED, EXIT_INTERNAL, EXIT_INTERRUPTED = 1, 3, 130
# Whether the running command asked for JSON and already printed its document:
# a failure then still leaves one JSON document on stdout.
_output = {"json": False, "emitted": False}
# Not checked here: trees.resolve() refuses a missing tree or a file with exit 1,
# the same whether the path came from an option or the environment.
TREE_PATH = click.Path(path_type=Path)
ROOT_KEY = "dsv4patch.root"


def common(command: Callable[..., Any]) -> Callable[..., Any]:
    """--json, -v and -q on every command (they may also precede the command)."""
    command = click.option(
        "--json", "as_json", is_flag=True,
        help="Print the result as JSON; the exit code is kept.")(command)
    command = click.option("-q", "--quiet", is_flag=True, default=None,
                           help="Only warnings and errors on stderr.")(command)
    return click.option("-v", "--verbose", is_flag=True, default=None,
                        help="Show every git command that runs.")(command)


def trees(command: Callable[..., Any]) -> Callable[..., Any]:
    """--vllm, --vllm-ascend and --root; the command sees only the two trees."""

    @functools.wraps(command)
    def with_root(*args: Any, root: Path | None, **kwargs: Any) -> Any:
        # --root beats the environment; an explicit tree option beats --root.
        click.get_current_context().meta[ROOT_KEY] = root
        if root is not None and not root.is_dir():
            # A mistyped root would otherwise read no environment and say so
            # only as "unknown" evidence when both trees are named explicitly.
            problem = "is not a directory" if root.exists() else "does not exist"
            _output["json"] = kwargs.get("as_json", False)
            raise PatchError(f"the root {root} {problem}",
                             hint="name a mounted image filesystem with --root PATH")
        if root is not None:
            for key, name in (("vllm", "vllm"), ("vllm_ascend", "vllm-ascend")):
                kwargs[key] = kwargs[key] or root / "vllm-workspace" / name
        return command(*args, **kwargs)

    wrapped = click.option(
        "--root", type=click.Path(path_type=Path),
        help="Inspect the image filesystem mounted here: trees default to "
        "ROOT/vllm-workspace/*, status reads the environment under it [/]")(with_root)
    wrapped = click.option("--vllm-ascend", "vllm_ascend", type=TREE_PATH,
                           help="vllm-ascend tree [ROOT/vllm-workspace/vllm-ascend, "
                           "$DSV4PATCH_VLLM_ASCEND, /vllm-workspace/vllm-ascend]"
                           )(wrapped)
    return click.option(
        "--vllm", type=TREE_PATH,
        help="vLLM tree [ROOT/vllm-workspace/vllm, $DSV4PATCH_VLLM, "
        "/vllm-workspace/vllm]")(wrapped)


def given_root() -> Path:
    """The --root of the running command, `/` without one."""
    root = click.get_current_context().meta.get(ROOT_KEY)
    return Path(root).absolute() if root else Path("/")


def dry_run(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--dry-run", is_flag=True,
                        help="Check and report, change nothing.")(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show every git command that runs.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=lambda ctx, _, value: _version(ctx, value),
              help="Show the tool and series versions and exit.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    """Apply the DeepSeek-V4 patch series to vLLM and vllm-ascend, safely."""
    ctx.obj = {"verbose": verbose, "quiet": quiet}


def setup(verbose: bool | None, quiet: bool | None, as_json: bool) -> None:
    """Install the one log handler: INFO by default, DEBUG with -v, WARNING with -q."""
    _output["json"] = as_json
    parent = click.get_current_context().find_root().obj or {}
    verbose = verbose or parent.get("verbose", False)
    quiet = quiet or parent.get("quiet", False)
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("dsv4patch")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    hooks.check_environment()


def _given(vllm: Path | None, vllm_ascend: Path | None) -> dict[str, Path | None]:
    return {"vllm": vllm, "vllm-ascend": vllm_ascend}


def emit(result: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    _output["emitted"] = True
    if as_json:
        click.echo(render.report_json(result))
    else:
        click.echo(text(result))


@cli.command()
@trees
@dry_run
@common
def apply(vllm: Path | None, vllm_ascend: Path | None, dry_run: bool,
          verbose: bool | None, quiet: bool | None, as_json: bool) -> None:
    """Apply the whole series to both trees, all or nothing."""
    setup(verbose, quiet, as_json)
    series = series_mod.load()
    report = apply_mod.run(series, _given(vllm, vllm_ascend), dry_run)
    emit(report, as_json, render.apply_text)


@cli.command()
@trees
@common
def check(vllm: Path | None, vllm_ascend: Path | None, verbose: bool | None,
          quiet: bool | None, as_json: bool) -> None:
    """Dry-run the whole series, cumulatively; change nothing."""
    setup(verbose, quiet, as_json)
    report = check_mod.run(series_mod.load(), _given(vllm, vllm_ascend))
    emit(report, as_json, render.check_text)
    for tree in report.trees:
        if tree.native:
            raise PatchError(tree.native, hint=native.HINT)
    if report.state == "blocked":
        raise PatchError("the series cannot be applied to these trees as they are",
                         hint="fix the problems listed above, then check again")


@cli.command()
@trees
@dry_run
@click.option("--from-patches", is_flag=True,
              help="Without a usable journal: reverse the series, but only if "
              "that gives back the recorded originals.")
@common
def revert(vllm: Path | None, vllm_ascend: Path | None, dry_run: bool,
           from_patches: bool, verbose: bool | None, quiet: bool | None,
           as_json: bool) -> None:
    """Undo what the journal recorded; never overwrite later edits."""
    setup(verbose, quiet, as_json)
    report = revert_mod.run(series_mod.load(), _given(vllm, vllm_ascend),
                            dry_run, from_patches)
    emit(report, as_json, render.revert_text)


@cli.command()
@trees
@common
def status(vllm: Path | None, vllm_ascend: Path | None, verbose: bool | None,
           quiet: bool | None, as_json: bool) -> None:
    """Show each patch and file: applied, not applied, partly, edited."""
    setup(verbose, quiet, as_json)
    report = status_mod.run(series_mod.load(), _given(vllm, vllm_ascend),
                            given_root())
    emit(report, as_json, render.status_text)


@cli.command()
@trees
@common
def drift(vllm: Path | None, vllm_ascend: Path | None, verbose: bool | None,
          quiet: bool | None, as_json: bool) -> None:
    """Compare every tracked file with the recorded base (rpm -V style)."""
    setup(verbose, quiet, as_json)
    report = drift_mod.run(series_mod.load(), _given(vllm, vllm_ascend))
    emit(report, as_json, render.drift_text)
    if report.blocking:
        raise PatchError(f"{report.blocking} files the series touches differ from "
                         "the base", hint="restore them before `dsv4patch apply`")


@cli.command()
@trees
@click.option("--python", type=click.Path(path_type=Path, dir_okay=False),
              help="The target's interpreter [$DSV4PATCH_PYTHON, the one running "
              "dsv4patch].")
@common
def verify(vllm: Path | None, vllm_ascend: Path | None, python: Path | None,
           verbose: bool | None, quiet: bool | None, as_json: bool) -> None:
    """Prove the applied series loads and works in the target's Python.

    Touched files as recorded at apply, no merge debris; then, in the target's
    Python, every touched file compiles, every patched module imports, the
    vllm-ascend plugin loads and the encoder and parsers give the golden results.
    """
    setup(verbose, quiet, as_json)
    report = verify_mod.run(series_mod.load(), _given(vllm, vllm_ascend), python)
    emit(report, as_json, render.verify_text)
    if report.failed:
        raise PatchError(*verify_mod.verdict(report))


@cli.command()
@click.option("--url", required=True, help="Base URL of the server, e.g. "
              "http://127.0.0.1:8000")
@click.option("--model", required=True, help="Served model name.")
@click.option("--api-key", default=None,
              help="Bearer token, if the server needs one.")
@click.option("--timeout", default=120.0, show_default=True,
              help="Seconds per request.")
@common
def probe(url: str, model: str, api_key: str | None, timeout: float,
          verbose: bool | None, quiet: bool | None, as_json: bool) -> None:
    """Check a running server end to end: thinking, tools, streaming."""
    setup(verbose, quiet, as_json)
    from dsv4patch import probe as probe_mod  # only this command needs its imports

    checks = probe_mod.run(url, model, api_key, timeout)
    _output["emitted"] = True
    click.echo(render.probe_json(checks) if as_json else render.probe_table(checks))
    failed = [c.name for c in checks if not c.passed]
    if failed:
        raise PatchError(f"{len(failed)} of {len(checks)} probe checks failed: "
                         f"{', '.join(failed)}", hint="the table above shows why")


@cli.command("record-profiles", hidden=True)
@click.option("--vllm", type=TREE_PATH, required=True, help="Pristine vLLM tree.")
@click.option("--vllm-ascend", "vllm_ascend", type=TREE_PATH, required=True,
              help="Pristine vllm-ascend tree.")
def record_profiles(vllm: Path, vllm_ascend: Path) -> None:
    """Regenerate patches/bases/*.gitblob and patches/profiles/*.toml from the
    pristine trees of the series' bases."""
    from dsv4patch import profiles

    for path in profiles.record(series_mod.load(), vllm, vllm_ascend):
        click.echo(f"wrote {path}")


def _version(ctx: click.Context, value: bool) -> None:
    """--version: the tool's version and the version of the series it carries."""
    if not value or ctx.resilient_parsing:
        return
    try:
        series = f"series {series_mod.load().version}"
    except PatchError as exc:
        series = f"no usable series: {exc.message}"
    click.echo(f"dsv4patch {__version__} ({series})")
    ctx.exit()


def main() -> None:
    """Run the CLI and map every way out of it to its exit code."""
    try:
        # Outside an apply's commit (which restores files) and a revert (which
        # finishes first), nothing is half changed when a signal arrives.
        with signals.raising("no file was left half changed"):
            cli.main(standalone_mode=False)
    except PatchError as exc:
        if _output["json"] and not _output["emitted"]:
            click.echo(json.dumps({"error": exc.message, "hint": exc.hint}, indent=2))
        click.echo(f"Error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        sys.exit(EXIT_FAILED)
    except Interrupted as exc:
        click.echo(f"Interrupted by {exc}.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("Interrupted; `dsv4patch status` shows where the trees stand.",
                   err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception:
        log_file = _crash_log()
        click.echo(f"Internal error: dsv4patch {__version__} crashed; the traceback "
                   f"is in {log_file}", err=True)
        sys.exit(EXIT_INTERNAL)


def _crash_log() -> Path | str:
    """Write the traceback to $DSV4PATCH_LOG_DIR, else the temp directory;
    if neither takes it, it goes to stderr."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = f"dsv4patch {__version__}\nargv: {sys.argv}\n\n" + traceback.format_exc()
    places = [os.environ.get("DSV4PATCH_LOG_DIR"), tempfile.gettempdir()]
    for directory in [Path(p) for p in places if p]:
        path = directory / f"dsv4patch-crash-{stamp}-{os.getpid()}.log"
        try:
            path.write_text(text)
        except OSError:
            continue
        return path
    click.echo(text, err=True)
    return "the output above"
