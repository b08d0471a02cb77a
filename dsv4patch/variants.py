"""Which recorded image profiles this machine's cheap hints do not contradict.

All four v0.13.0rc3 images ship byte-identical vLLM and vllm-ascend trees, so the
files alone cannot tell them apart; /etc/os-release and $SOC_VERSION narrow the
list where dsv4patch runs inside the image. `identify.py` does the full scoring
for `status`; this quick answer is what the journal records.
"""

from __future__ import annotations

import os
from pathlib import Path

from dsv4patch import fingerprint, profiles


def soc_hint() -> str | None:
    """The SoC family (A2, A3, ...) that $SOC_VERSION names, if set."""
    soc = os.environ.get("SOC_VERSION", "")
    return profiles.soc_family(soc) if soc else None


def consistent(tree: str) -> list[str]:
    """The profiles whose OS and SoC do not contradict this machine's."""
    del tree  # every variant carries the same files for both trees
    recorded = profiles.load_all()
    system, soc = fingerprint.os_id(Path("/")), soc_hint()
    if system not in {p.environment.get("os_id") for p in recorded}:
        # Not inside any of the images: the tracked files fit all of them.
        system = None
    return [p.name for p in recorded
            if system in (None, p.environment.get("os_id"))
            and soc in (None, p.soc)]
