"""The series manifest (patches/series.toml) and the patch files it pins."""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from dsv4patch.diff import FileDiff, parse_diff
from dsv4patch.errors import PatchError

TREES = ("vllm", "vllm-ascend")
MANIFEST = "series.toml"


@dataclass
class Patch:
    file: str
    tree: str
    description: str
    origin: str
    sha256: str
    data: bytes
    files: list[FileDiff] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]


@dataclass
class Series:
    directory: Path
    version: str
    bases: dict[str, dict[str, str]]
    patches: list[Patch]

    def for_tree(self, tree: str) -> list[Patch]:
        return [p for p in self.patches if p.tree == tree]

    def footprint(self, tree: str) -> list[str]:
        """Every path the series touches in `tree`, in first-touched order."""
        seen: dict[str, None] = {}
        for patch in self.for_tree(tree):
            seen.update(dict.fromkeys(patch.paths))
        return list(seen)

    @property
    def digest(self) -> str:
        """One sha256 over the version and every patch hash, in order."""
        text = self.version + "".join(f"\n{p.file} {p.sha256}" for p in self.patches)
        return hashlib.sha256(text.encode()).hexdigest()


def locate() -> Path:
    """Return the series directory: $DSV4PATCH_SERIES, the checkout's, or the
    copy installed with the package."""
    override = os.environ.get("DSV4PATCH_SERIES")
    if override:
        return Path(override)
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / "patches", package / "patches"):
        if (candidate / MANIFEST).is_file():
            return candidate
    raise PatchError(
        "no patch series found next to the package",
        hint="set DSV4PATCH_SERIES to the directory that holds series.toml",
    )


def load(directory: Path | None = None) -> Series:
    """Read and verify the series; raise PatchError on a tampered or bad patch."""
    directory = directory or locate()
    manifest = directory / MANIFEST
    try:
        with open(manifest, "rb") as f:
            raw = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PatchError(f"cannot read {manifest}: {exc}",
                         hint="restore series.toml from the release") from exc

    patches = [_load_patch(directory, entry) for entry in raw.get("patch", [])]
    return Series(directory, str(raw.get("version", "")), raw.get("base", {}), patches)


def _load_patch(directory: Path, entry: dict[str, str]) -> Patch:
    name = entry.get("file", "")
    if entry.get("tree") not in TREES or not name or "/" in name:
        raise PatchError(f"series.toml: bad patch entry {entry!r}",
                         hint=f"each [[patch]] needs a file name and a tree in {TREES}")
    try:
        data = (directory / name).read_bytes()
    except OSError as exc:
        raise PatchError(f"patch {name} is missing: {exc.strerror}",
                         hint="restore the patches directory from the release") from exc

    actual = hashlib.sha256(data).hexdigest()
    if actual != entry.get("sha256"):
        raise PatchError(
            f"patch {name} has sha256 {actual[:12]}, the series pins "
            f"{str(entry.get('sha256'))[:12]}: refusing a tampered patch",
            hint="restore the patch file from the release, or refresh it with "
            "tools/series_dev.py",
        )

    files = parse_diff(data, name)
    for diff in files:
        check_relative(diff.path, name)
    return Patch(name, entry["tree"], entry.get("description", ""),
                 entry.get("origin", ""), actual, data, files)


def check_relative(path: str, patch: str) -> None:
    """Refuse a path that is absolute or climbs out of its tree."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or "\\" in path or not pure.parts:
        raise PatchError(
            f"patch {patch} reaches outside its tree through {path!r}",
            hint="patches may only name relative paths inside the tree",
        )
