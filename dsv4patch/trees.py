"""The target trees: where they are, what shape, and which base they match."""

from __future__ import annotations

import json
import os
import re
import site
from dataclasses import dataclass, field
from pathlib import Path

from dsv4patch import bases, git
from dsv4patch.errors import PatchError

DEFAULTS = {
    "vllm": ("DSV4PATCH_VLLM", "/vllm-workspace/vllm"),
    "vllm-ascend": ("DSV4PATCH_VLLM_ASCEND", "/vllm-workspace/vllm-ascend"),
}
PACKAGE = {"vllm": "vllm", "vllm-ascend": "vllm_ascend"}
# setuptools-scm writes `__version__ = version = '0.13.0'`; accept either name.
_VERSION_LINE = re.compile(
    r"""^(?:__version__|version)\s*=\s*(?:version\s*=\s*)?['"]([^'"]+)['"]""", re.M)


@dataclass
class Tree:
    name: str
    path: Path
    shape: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.path})"


def path_for(name: str, given: Path | None) -> Path:
    """The tree's path from the option, the environment or the image default."""
    env, default = DEFAULTS[name]
    return Path(given or os.environ.get(env) or default).absolute()


def resolve(name: str, given: Path | None) -> Tree:
    """Return the tree at path_for(); raise PatchError if it is not one."""
    env, _ = DEFAULTS[name]
    path = path_for(name, given)
    if path.exists() and not path.is_dir():
        raise PatchError(f"the {name} tree {path} is not a directory",
                         hint=f"name the tree's directory with --{name} PATH or "
                         f"${env}")
    if not path.is_dir():
        raise PatchError(f"the {name} tree {path} does not exist",
                         hint=f"name it with --{name} PATH or ${env}")
    if not (path / PACKAGE[name] / "__init__.py").is_file():
        raise PatchError(f"{path} is not a {name} source tree "
                         f"(no {PACKAGE[name]}/__init__.py)",
                         hint=f"name the tree with --{name} PATH")
    return Tree(name, path, shape(path), detect_versions(name, path))


def shape(path: Path) -> str:
    """Say whether `path` is its own git clone, plain, or inside another repo."""
    if (path / ".git").exists():
        return "git clone"
    for parent in path.parents:
        if (parent / ".git").exists():
            return f"plain directory inside the git repository {parent}"
    return "plain directory"


def detect_versions(name: str, path: Path) -> dict[str, str]:
    """Collect every cheap version claim: git tag, _version.py, dist-info."""
    found: dict[str, str] = {}
    tags = git.tags_at_head(path) if (path / ".git").exists() else []
    if tags:
        found["git tag"] = ", ".join(tag.removeprefix("v") for tag in tags)
    version_file = path / PACKAGE[name] / "_version.py"
    if version_file.is_file():
        match = _VERSION_LINE.search(version_file.read_text(errors="replace"))
        if match:
            found["_version.py"] = match[1]
    dist = _installed_version(PACKAGE[name], path)
    if dist:
        found["dist-info"] = dist
    return found


def _installed_version(package: str, path: Path) -> str | None:
    """The version of an editable install that points at this very tree."""
    roots = [*site.getsitepackages(), site.getusersitepackages()]
    for root in map(Path, roots):
        for info in root.glob(f"{package}-*.dist-info") if root.is_dir() else []:
            try:
                url = json.loads((info / "direct_url.json").read_text())["url"]
            except (OSError, ValueError, KeyError):
                continue
            if url.removeprefix("file://") == str(path.resolve()):
                return info.name[len(package) + 1:-len(".dist-info")]
    return None


def check_base(tree: Tree, base_version: str, footprint: list[str]) -> None:
    """Refuse a tree that supports DeepSeek-V4 natively, one at another version,
    or one with local edits in touched files."""
    from dsv4patch import native  # native reads Tree from this module

    # First: a later release also fails the version test below, but "not needed"
    # is the reason that helps the operator.
    native.refuse(tree)
    # Several tags may point at HEAD (", "-joined); one naming the base is enough.
    others = {k: v for k, v in tree.versions.items()
              if base_version not in [c.split("+")[0] for c in v.split(", ")]}
    if others:
        claims = ", ".join(f"{k} says {v}" for k, v in others.items())
        raise PatchError(
            f"{tree.label} is not at {base_version}: {claims}",
            hint=f"the series is made for {tree.name} {base_version}; use a tree "
            "from the matching image",
        )

    manifest = bases.load(tree.name, base_version)
    differing = bases.differing(tree.path, manifest, footprint)
    if not differing:
        return
    total = bases.sample_mismatches(tree.path, manifest)
    if total > bases.OTHER_VERSION_THRESHOLD:
        raise PatchError(
            f"{tree.label} does not look like {tree.name} {base_version}: "
            f"{total} sampled tracked files differ",
            hint="use the tree from a vllm-ascend v0.13.0rc3 image, or see "
            "`dsv4patch drift`",
        )
    shown = ", ".join(differing[:5]) + (" ..." if len(differing) > 5 else "")
    raise PatchError(
        f"{tree.label} has local edits in files the series touches: {shown}",
        hint="save your edits elsewhere and restore these files to the "
        f"{base_version} originals; `dsv4patch drift` lists every difference",
    )
