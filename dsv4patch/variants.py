"""Which vllm-ascend v0.13.0rc3 image variants a tree is consistent with.

All four variants ship byte-identical vLLM and vllm-ascend tracked files, so the
file hashes alone cannot tell them apart; cheap hints narrow the list where the
tree sits inside the image itself.
"""

from __future__ import annotations

import os
from pathlib import Path

VARIANTS = {
    "v0.13.0rc3": {"os": "ubuntu", "soc": "a2"},
    "v0.13.0rc3-openeuler": {"os": "openeuler", "soc": "a2"},
    "v0.13.0rc3-a3": {"os": "ubuntu", "soc": "a3"},
    "v0.13.0rc3-a3-openeuler": {"os": "openeuler", "soc": "a3"},
}


def os_hint(release: Path = Path("/etc/os-release")) -> str | None:
    try:
        text = release.read_text().lower()
    except OSError:
        return None
    for name in ("openeuler", "ubuntu"):
        if f"id={name}" in text or f'id="{name}"' in text:
            return name
    return "other"


def soc_hint() -> str | None:
    soc = os.environ.get("SOC_VERSION", "").lower()
    if not soc:
        return None
    return "a3" if soc.startswith("ascend910_93") else "a2"


def consistent(tree: str) -> list[str]:
    """The variants whose hints do not contradict this machine's."""
    del tree  # every variant carries the same files for both trees
    system, soc = os_hint(), soc_hint()
    if system == "other":
        # Not inside any of the images: the tracked files fit all four.
        system = None
    return [name for name, hint in VARIANTS.items()
            if system in (None, hint["os"]) and soc in (None, hint["soc"])]
