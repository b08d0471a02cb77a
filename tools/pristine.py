"""Rebuild the pristine vLLM and vllm-ascend trees from their PyPI sdists.

The vllm-ascend v0.13.0rc3 images hold vLLM v0.13.0 as a depth-1 git clone and
vllm-ascend v0.13.0rc3 as a plain copy. Their tracked files are byte-identical to
the two source distributions, less the files that `setup.py sdist` generates, so
this script recreates both trees offline-reproducibly:

    python tools/pristine.py fetch      # download both sdists, verify sha256
    python tools/pristine.py pristine   # extract into $CACHE/pristine/<tree>
    python tools/pristine.py image      # $CACHE/image/vllm-workspace/{vllm,vllm-ascend}

$CACHE is $DSV4PATCH_CACHE, by default ~/.cache/dsv4patch.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("DSV4PATCH_CACHE", Path.home() / ".cache" / "dsv4patch"))

# What `setup.py sdist` adds that a git checkout does not track.
GENERATED = (
    "PKG-INFO",
    "vllm.egg-info",
    "vllm_ascend.egg-info",
    "vllm/_version.py",
    "vllm_ascend/_version.py",
)
# setuptools writes a setup.cfg holding only this stanza when the repo has none.
SDIST_SETUP_CFG = "[egg_info]\ntag_build = \ntag_date = 0\n\n"

# pip reads these to build sdist metadata while downloading; see DEVELOPERS.md.
SDIST_ENV = {
    "vllm": {"VLLM_VERSION_OVERRIDE": "0.13.0", "VLLM_TARGET_DEVICE": "empty"},
    "vllm-ascend": {"SOC_VERSION": "ascend910b1"},
}
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "vLLM",
    "GIT_AUTHOR_EMAIL": "vllm@localhost",
    "GIT_COMMITTER_NAME": "vLLM",
    "GIT_COMMITTER_EMAIL": "vllm@localhost",
    "GIT_AUTHOR_DATE": "2025-12-18T00:00:00Z",
    "GIT_COMMITTER_DATE": "2025-12-18T00:00:00Z",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def bases() -> dict[str, dict[str, str]]:
    with open(ROOT / "patches" / "series.toml", "rb") as f:
        return tomllib.load(f)["base"]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch() -> None:
    sdist_dir = CACHE / "sdist"
    sdist_dir.mkdir(parents=True, exist_ok=True)
    for tree, base in bases().items():
        archive = sdist_dir / base["sdist"]
        if not archive.exists():
            requirement = f"{base['sdist'].split('-')[0].replace('_', '-')}=={base['version']}"
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                 "--no-build-isolation", "--no-binary", ":all:", "-d", str(sdist_dir),
                 requirement],
                check=True,
                env={**os.environ, **SDIST_ENV[tree]},
            )
        actual = sha256_of(archive)
        if actual != base["sdist_sha256"]:
            archive.rename(archive.with_suffix(".rejected"))
            sys.exit(f"error: {archive.name} has sha256 {actual}, "
                     f"expected {base['sdist_sha256']}; moved aside")
        print(f"{archive.name}: sha256 ok")


def strip_generated(tree: Path) -> None:
    for name in GENERATED:
        path = tree / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    setup_cfg = tree / "setup.cfg"
    if setup_cfg.exists() and setup_cfg.read_text() == SDIST_SETUP_CFG:
        setup_cfg.unlink()


def pristine() -> None:
    fetch()
    target_root = CACHE / "pristine"
    target_root.mkdir(parents=True, exist_ok=True)
    for tree, base in bases().items():
        target = target_root / tree
        if target.exists():
            print(f"{target}: present")
            continue
        with tempfile.TemporaryDirectory(dir=target_root) as scratch:
            # The "data" filter also drops the archive's owner ids (vllm-ascend's
            # sdist carries uid 1001), which would make git refuse a copy as root.
            with tarfile.open(CACHE / "sdist" / base["sdist"]) as archive:
                archive.extractall(scratch, filter="data")
            (top,) = Path(scratch).iterdir()
            strip_generated(top)
            top.rename(target)
        print(f"{target}: built")


def git(tree: Path, *args: str) -> None:
    env = {**os.environ, **GIT_IDENTITY}
    subprocess.run(["git", *args], cwd=tree, check=True, env=env,
                   stdout=subprocess.DEVNULL)


def image(reset: bool) -> None:
    """Lay out both trees as the images do: vLLM a git clone, vllm-ascend a copy."""
    pristine()
    workspace = CACHE / "image" / "vllm-workspace"
    for tree in ("vllm", "vllm-ascend"):
        target = workspace / tree
        if target.exists() and reset:
            shutil.rmtree(target)
        if target.exists():
            print(f"{target}: present")
            continue
        shutil.copytree(CACHE / "pristine" / tree, target, symlinks=True)
        if tree == "vllm":
            git(target, "init", "--quiet", "--initial-branch=main")
            git(target, "add", "--all")
            git(target, "commit", "--quiet", "--message", "v0.13.0")
            git(target, "tag", "v0.13.0")
        print(f"{target}: built")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("fetch", "pristine", "image"))
    parser.add_argument("--reset", action="store_true",
                        help="rebuild the image trees even if present")
    args = parser.parse_args()
    if args.step == "fetch":
        fetch()
    elif args.step == "pristine":
        pristine()
    else:
        image(args.reset)


if __name__ == "__main__":
    main()
