"""Patches applied by hand before this series, recognised by their footprint.

The operators' `deepseek-v4-agentic-support.patch` predates the series and its
text is not available, so `patches/known/*.toml` records what such a patch must
touch: the modules it adds, the registries it changes, and content markers.
A tree that has no journal, is otherwise the recorded base, and holds marked
files that the base does not have and this series does not explain, carries
it. Applying on top would fail late or mix two implementations, so check and
apply refuse and name the files.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from dsv4patch import bases
from dsv4patch import series as series_mod
from dsv4patch.errors import PatchError
from dsv4patch.series import Series
from dsv4patch.stage import APPLIED
from dsv4patch.trees import Tree, check_base

log = logging.getLogger(__name__)


@dataclass
class Footprint:
    patch: str
    tree: str
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    markers: list[str] = field(default_factory=list)


@dataclass
class Found:
    patch: str
    files: list[str]

    @property
    def message(self) -> str:
        return (f"the earlier {self.patch} appears applied to "
                f"{', '.join(self.files)}; reverse it (patch -R -p1 < it, or git "
                "checkout the files) before applying the series")


def directory() -> Path:
    return series_mod.locate() / "known"


def load() -> list[Footprint]:
    """Every recorded footprint; a damaged one is an error, not a silent skip."""
    found = []
    for path in sorted(directory().glob("*.toml")):
        try:
            raw = tomllib.loads(path.read_text())
            found.append(Footprint(**raw))
        except (OSError, ValueError, TypeError) as exc:
            raise PatchError(f"cannot read the known-patch footprint {path}: {exc}",
                             hint="restore patches/known/ from the release") from exc
    return found


def find(series: Series, tree: Tree) -> list[Found]:
    """The earlier patches that appear applied to `tree` (which has no journal)."""
    footprints = [f for f in load() if f.tree == tree.name]
    if not footprints or tree.name not in series.bases:
        return []
    version = series.bases[tree.name]["version"]
    manifest = bases.load(tree.name, version)
    marked = {f.patch: _marked(tree.path, manifest, f) for f in footprints}
    if not any(marked.values()) or not _at_base(tree, version, manifest):
        return []  # another release: the native-support check speaks for it

    explained = _explained(series, tree)
    found = [Found(patch, [rel for rel in files if rel not in explained])
             for patch, files in marked.items()]
    return [hit for hit in found if hit.files]


def _at_base(tree: Tree, version: str, manifest: dict[str, str]) -> bool:
    """Whether the tree claims the base version and its sampled files agree."""
    try:
        check_base(tree, version, [])
    except PatchError:
        return False
    return bases.sample_mismatches(tree.path, manifest) <= bases.OTHER_VERSION_THRESHOLD


def refuse(series: Series, tree: Tree) -> None:
    """Raise PatchError when an earlier hand-applied patch is in the tree."""
    for hit in find(series, tree):
        raise PatchError(hit.message, hint="dsv4patch recognises it by its "
                         "footprint (patches/known/); nothing was changed")


def describe(series: Series, tree: Tree) -> str:
    """One sentence for `status`, or '' when no earlier patch is found."""
    return "; ".join(hit.message for hit in find(series, tree))


def _marked(root: Path, manifest: dict[str, str], footprint: Footprint) -> list[str]:
    """Added or changed files of the footprint that carry one of its markers."""
    candidates = {p.relative_to(root).as_posix()
                  for pattern in footprint.added for p in root.glob(pattern)
                  if p.is_file()}
    candidates |= {rel for rel in footprint.changed if (root / rel).is_file()}
    differing = set(bases.differing(root, manifest, sorted(candidates)))
    markers = [m.encode() for m in footprint.markers]
    return [rel for rel in sorted(differing)
            if any(m in (root / rel).read_bytes() for m in markers)]


def _explained(series: Series, tree: Tree) -> set[str]:
    """Files whose difference is this series' own patches, applied."""
    from dsv4patch import check  # check calls into this module

    explained: set[str] = set()
    patches = {p.file: p for p in series.for_tree(tree.name)}
    for outcome in check.classify(series, tree):
        if outcome.state == APPLIED:
            explained |= set(patches[outcome.patch].paths)
        explained |= {rel for rel, state in outcome.files.items()
                      if state == "applied"}
    return explained
