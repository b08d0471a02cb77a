"""Fake image roots: the files by which an image tells what it is, and its trees.

`build(root, variant)` lays out what the vllm-ascend v0.13.0rc3 images carry:
/etc/os-release, the CANN toolkit's install info, site-packages METADATA for
Python 3.11 (the packages the Dockerfiles install), vllm-ascend's generated
`_build_info.py` (the SoC family setup.py recorded), and the pristine trees at
/vllm-workspace. The facts below are written out by hand from the images'
Dockerfiles, independently of `dsv4patch record-profiles`, so the tests compare
two readings of them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.support import trees

PYTHON_DIR = "usr/local/python3.11.13/lib/python3.11/site-packages"
TOOLKIT = "usr/local/Ascend/ascend-toolkit/latest"
UBUNTU = {"NAME": "Ubuntu", "ID": "ubuntu", "ID_LIKE": "debian",
          "VERSION_ID": "22.04", "PRETTY_NAME": "Ubuntu 22.04.5 LTS"}
OPENEULER = {"NAME": "openEuler", "ID": "openEuler", "VERSION_ID": "24.03",
             "PRETTY_NAME": "openEuler 24.03 (LTS-SP2)"}
IMAGES = {
    "v0.13.0rc3": {"os": UBUNTU, "soc": "ascend910b1", "device": "A2"},
    "v0.13.0rc3-openeuler": {"os": OPENEULER, "soc": "ascend910b1", "device": "A2"},
    "v0.13.0rc3-a3": {"os": UBUNTU, "soc": "ascend910_9391", "device": "A3"},
    "v0.13.0rc3-a3-openeuler": {"os": OPENEULER, "soc": "ascend910_9391",
                                "device": "A3"},
}
CANN = "8.5.1"
# What `pip list` shows in the images: the pins of vllm-ascend's requirements,
# vLLM installed editable with VLLM_TARGET_DEVICE=empty.
PACKAGES = {
    "vllm": "0.13.0+empty", "vllm_ascend": "0.13.0rc3", "torch": "2.8.0+cpu",
    "torch_npu": "2.8.0.post2", "transformers": "4.57.6", "fastapi": "0.123.10",
    "xgrammar": "0.1.32", "triton_ascend": "3.2.0", "numpy": "1.26.4",
    "torchvision": "0.23.0",
}
# What the image's editable installs leave inside the trees, none of it tracked:
# setuptools_scm's version files and egg-info for both; for vllm-ascend also the
# compiled extension, the catlass submodule csrc/build_aclnn.sh checks out, the
# custom operators it builds under csrc/ and installs into _cann_ops_custom, and
# CMake's build and FetchContent directories.
RESIDUE = {
    "vllm": ("vllm/_version.py", "vllm.egg-info/PKG-INFO"),
    "vllm-ascend": (
        "vllm_ascend/_version.py", "vllm_ascend.egg-info/PKG-INFO",
        "vllm_ascend/vllm_ascend_C.cpython-311-aarch64-linux-gnu.so",
        "vllm_ascend/_cann_ops_custom/vendors/config.ini",
        "vllm_ascend/_cann_ops_custom/vendors/vllm-ascend/op_api/include/"
        "aclnn_lightning_indexer.h",
        "csrc/third_party/catlass/include/catlass/catlass.hpp",
        "csrc/build/CMakeCache.txt", "csrc/build_out/version.info",
        "csrc/output/cann-ops-transformer-custom_linux-aarch64.run",
        "build/temp.linux-aarch64-cpython-311/CMakeCache.txt",
        ".deps/pybind11-src/CMakeLists.txt",
    ),
}


def build(root: Path, variant: str, vllm_tree: Path | None = None,
          ascend_tree: Path | None = None, *, link: bool = False,
          git_clone: bool = False, residue: bool = False) -> Path:
    """Write a fake `variant` image under `root` and return `root`.

    The trees default to the pristine ones. `link=True` hard-links their files
    instead of copying (for roots nothing writes into: a write through a link
    would change the pristine tree); `git_clone=True` makes vLLM a git repository
    tagged v0.13.0, as the image's depth-1 clone is. `residue=True` adds what the
    image's builds leave in the trees (RESIDUE).
    """
    image = IMAGES[variant]
    root.mkdir(parents=True, exist_ok=True)
    write_os_release(root, image["os"])
    write_cann(root, CANN)
    for name, version in PACKAGES.items():
        write_dist_info(root, name, version)

    workspace = root / "vllm-workspace"
    workspace.mkdir(exist_ok=True)
    vllm = _copy(vllm_tree or trees.pristine_tree("vllm"), workspace / "vllm", link)
    ascend = _copy(ascend_tree or trees.pristine_tree("vllm-ascend"),
                   workspace / "vllm-ascend", link)
    # setup.py's gen_build_info() writes this during `pip install -e`.
    (ascend / "vllm_ascend" / "_build_info.py").write_text(
        f"# Auto-generated file\n__device_type__ = '{image['device']}'\n")
    if git_clone:
        _git_tag(vllm, "v0.13.0")
    if residue:
        for tree, rels in RESIDUE.items():
            for rel in rels:
                path = workspace / tree / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                _replace(path, f"# left by the image's build: {rel}\n")
    return root


def write_os_release(root: Path, values: dict[str, str]) -> None:
    (root / "etc").mkdir(parents=True, exist_ok=True)
    text = "".join(f'{key}="{value}"\n' for key, value in values.items())
    _replace(root / "etc" / "os-release", text)


def write_cann(root: Path, version: str) -> None:
    info = root / TOOLKIT / "aarch64-linux" / "ascend_toolkit_install.info"
    info.parent.mkdir(parents=True, exist_ok=True)
    _replace(info, f"package_name=Ascend-cann-toolkit\nversion={version}\n"
             "innerversion=V100R001C25SPC001B232\narch=aarch64\nos=linux\n"
             f"path={Path('/', TOOLKIT).parent / version}\n")


def write_dist_info(root: Path, name: str, version: str) -> Path:
    """site-packages/<name>-<version>.dist-info/METADATA, replacing any other
    version of the same package."""
    site = root / PYTHON_DIR
    site.mkdir(parents=True, exist_ok=True)
    for old in site.glob(f"{name}-*.dist-info"):
        shutil.rmtree(old)
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n"
        "Summary: fake-root metadata\n\nBody text with Version: 0.0.0 in it.\n")
    return info


def edit(path: Path, text: str) -> None:
    """Change a file without writing through a hard link into the pristine tree."""
    _replace(path, text)


def _replace(path: Path, text: str) -> None:
    if path.exists():
        path.unlink()
    path.write_text(text)


def _copy(source: Path, dest: Path, link: bool) -> Path:
    if link:
        subprocess.run(["cp", "-al", str(source), str(dest)], check=True)
    else:
        shutil.copytree(source, dest, symlinks=True)
    return dest


def _git_tag(tree: Path, tag: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "t@localhost",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "t@localhost",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    for args in (["init", "-q", "-b", "main"], ["add", "--all"],
                 ["commit", "-q", "-m", tag], ["tag", tag]):
        subprocess.run(["git", *args], cwd=tree, check=True, env=env,
                       capture_output=True)
