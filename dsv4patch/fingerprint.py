"""The environment of a system, or of an image filesystem mounted at a root.

What is read, all relative to the root (default `/`):
- `etc/os-release` (else `usr/lib/os-release`): `ID` and `VERSION_ID`;
- the CANN version: `usr/local/Ascend/ascend-toolkit/latest/<arch>-linux/
  ascend_toolkit_install.info` (`version=`), else `latest/version.cfg`
  (`version=` or the first `[x.y.z...]` of `toolkit_running_version`);
- the SoC family: `$SOC_VERSION` when the root is `/` (the images set it), else
  the `__device_type__` that vllm-ascend's setup.py writes to
  `vllm_ascend/_build_info.py` in the tree it installed;
- Python and package versions: the `*.dist-info/METADATA` and
  `*.egg-info/PKG-INFO` files of the root's site-packages directories (for `/`
  also the running interpreter's).
"""

from __future__ import annotations

import os
import re
import stat
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from dsv4patch.profiles import normalize, soc_family

SITE_PACKAGES = (
    "usr/local/python3*/lib/python3*/site-packages",
    "usr/local/lib/python3*/site-packages",
    "usr/local/lib/python3*/dist-packages",
    "usr/lib/python3*/site-packages",
    "usr/lib64/python3*/site-packages",
    "usr/lib/python3/dist-packages",
    "opt/*/lib/python3*/site-packages",
)
TOOLKIT = "usr/local/Ascend/ascend-toolkit/latest"
BUILD_INFO = "vllm_ascend/_build_info.py"
_PYTHON_DIR = re.compile(r"python(3\.\d+)")
_DEVICE_TYPE = re.compile(r"""^__device_type__\s*=\s*['"]_?(\w+)['"]""", re.M)
_RUNNING_VERSION = re.compile(r"\[(\d[\w.]*)")
# Symlinks followed inside a root before giving up (a loop ends here).
MAX_LINKS = 40
# These files are a few lines long; no more is read of any of them.
MAX_READ = 1 << 20


@dataclass
class Fingerprint:
    root: str
    os_id: str | None = None
    os_version: str | None = None
    cann: str | None = None
    soc: str | None = None
    python: str | None = None
    packages: dict[str, str] = field(default_factory=dict)
    # Where each value came from, for the report.
    sources: dict[str, str] = field(default_factory=dict)


def read(root: Path, ascend_tree: Path | None = None) -> Fingerprint:
    """Read what the root tells about itself; anything absent stays None."""
    found = Fingerprint(str(root))
    _os_release(root, found)
    _cann(root, found)
    _soc(root, ascend_tree, found)
    _python_and_packages(root, found)
    return found


def is_host(root: Path) -> bool:
    return root.resolve() == Path("/")


def inside(root: Path, rel: str) -> Path:
    """`rel` under `root`, following symlinks as if `root` were `/`: an image's
    `/etc/os-release -> /usr/lib/os-release` must not read the host's file."""
    parts = list(PurePosixPath(rel).parts)
    current, hops = root, 0
    while parts:
        part = parts.pop(0)
        if part in ("/", ".", ""):
            continue
        if part == "..":
            current = current.parent if current != root else root
            continue
        candidate = current / part
        if not candidate.is_symlink() or hops >= MAX_LINKS:
            current = candidate
            continue
        hops += 1
        target = PurePosixPath(os.readlink(candidate))
        if target.is_absolute():
            current, parts = root, [*target.parts[1:], *parts]
        else:
            parts = [*target.parts, *parts]
    return current


def _os_release(root: Path, found: Fingerprint) -> None:
    for rel in ("etc/os-release", "usr/lib/os-release"):
        values = _key_values(inside(root, rel))
        if values:
            found.os_id = values.get("ID", "").lower() or None
            found.os_version = values.get("VERSION_ID") or None
            found.sources["os"] = str(inside(root, rel))
            return


def os_id(root: Path) -> str | None:
    """The os-release ID under `root`, lower-cased, read as `read` reads it."""
    found = Fingerprint(str(root))
    _os_release(root, found)
    return found.os_id


def _cann(root: Path, found: Fingerprint) -> None:
    toolkit = inside(root, TOOLKIT)
    for found_info in sorted(toolkit.glob("*-linux/ascend_toolkit_install.info")):
        info = inside(root, found_info.relative_to(root).as_posix())
        version = _key_values(info).get("version")
        if version:
            found.cann = version
            found.sources["cann"] = str(info)
            return
    values = _key_values(inside(root, f"{TOOLKIT}/version.cfg"))
    version = values.get("version")
    if not version:
        match = _RUNNING_VERSION.search(values.get("toolkit_running_version", ""))
        version = match[1] if match else None
    if version:
        found.cann = version
        found.sources["cann"] = str(inside(root, f"{TOOLKIT}/version.cfg"))


def _soc(root: Path, ascend_tree: Path | None, found: Fingerprint) -> None:
    env = os.environ.get("SOC_VERSION", "")
    if is_host(root) and env:
        found.soc = soc_family(env)
        found.sources["soc"] = f"$SOC_VERSION={env}"
        return
    trees = [ascend_tree] if ascend_tree else []
    trees.append(root / "vllm-workspace" / "vllm-ascend")
    for tree in trees:
        text = _read_text(tree / BUILD_INFO)
        if text is None:
            continue
        match = _DEVICE_TYPE.search(text)
        if match:
            found.soc = match[1].upper()
            found.sources["soc"] = str(tree / BUILD_INFO)
            return


def site_dirs(root: Path) -> list[Path]:
    """The site-packages directories under `root`, the interpreter's for `/`."""
    dirs = [d for pattern in SITE_PACKAGES for d in sorted(root.glob(pattern))
            if d.is_dir()]
    if is_host(root):
        dirs.insert(0, Path(sysconfig.get_paths()["purelib"]))
    return list(dict.fromkeys(dirs))


def _python_and_packages(root: Path, found: Fingerprint) -> None:
    if is_host(root):
        found.python = f"{sys.version_info.major}.{sys.version_info.minor}"
        found.sources["python"] = sys.executable
    serving: Path | None = None
    for directory in site_dirs(root):
        for meta in sorted([*directory.glob("*.dist-info/METADATA"),
                            *directory.glob("*.egg-info/PKG-INFO")]):
            values = _headers(meta)
            name, version = values.get("name"), values.get("version")
            if not (name and version):
                continue
            found.packages.setdefault(normalize(name), version)
            if normalize(name) in ("vllm", "vllm-ascend") and serving is None:
                serving = directory
    if found.python is not None:
        return
    # The Python that serves is the one vLLM is installed in; an image may carry
    # the distribution's own python3 beside it.
    for directory in ([serving] if serving else []) + site_dirs(root):
        match = _PYTHON_DIR.search(str(directory.relative_to(root)))
        if match:
            found.python = match[1]
            found.sources["python"] = str(directory)
            return


def _read_text(path: Path) -> str | None:
    """The start of a regular file, None for anything else.

    The caller resolved links with inside(); a link still left (a loop) would be
    followed on the host, and a pipe or a device could be read forever.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return f.read(MAX_READ).decode(errors="replace")


def _key_values(path: Path) -> dict[str, str]:
    """KEY=value lines, quotes stripped (os-release and the CANN info files)."""
    text = _read_text(path)
    if text is None:
        return {}
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            values[key.strip()] = value.strip().strip("'\"")
    return values


def _headers(path: Path) -> dict[str, str]:
    """The Name and Version headers of a METADATA or PKG-INFO file."""
    values: dict[str, str] = {}
    for line in (_read_text(path) or "").splitlines():
        if not line.strip():
            break  # the body starts; headers are done
        key, sep, value = line.partition(":")
        if sep and key.lower() in ("name", "version"):
            values.setdefault(key.lower(), value.strip())
    return values
