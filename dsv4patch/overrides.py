"""Source patches that vllm-ascend would silently override at runtime.

vllm-ascend replaces attributes of vLLM modules from `vllm_ascend/patch/` when
its platform plugin loads (e.g. `vllm.config.model.ModelConfig.is_deepseek_mla =
...`). A series hunk that changes such an attribute in vLLM's source would be
undone in the running server; this finds those pairs so `check` can say so.
"""

from __future__ import annotations

import re
from pathlib import Path

from dsv4patch.series import Series

PATCH_DIR = "vllm_ascend/patch"


def module_of(rel: str) -> str | None:
    """vllm/config/model.py -> vllm.config.model; None for non-modules."""
    if not rel.endswith(".py"):
        return None
    parts = rel[:-3].split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find(series: Series, ascend: Path) -> list[str]:
    """One sentence per runtime override that hits a name the series changes."""
    assignments = _assignments(ascend)
    found: list[str] = []
    for patch in series.for_tree("vllm"):
        for diff in patch.files:
            module = module_of(diff.path)
            if module is None:
                continue
            for where, target in assignments:
                if not target.startswith(module + "."):
                    continue
                leaf = target.rsplit(".", 1)[-1]
                if any(re.search(rf"\b{re.escape(leaf)}\b", text)
                       for text in diff.changed):
                    found.append(f"{patch.file} changes {leaf} in {diff.path}, but "
                                 f"{where} replaces {target} at runtime")
    return found


def _assignments(ascend: Path) -> list[tuple[str, str]]:
    """(file:line, dotted target) for each `vllm.x.y = ...` in the patch dir."""
    pattern = re.compile(r"^\s*(vllm(?:\.\w+)+)\s*=(?!=)", re.M)
    results: list[tuple[str, str]] = []
    for path in sorted((ascend / PATCH_DIR).rglob("*.py")):
        text = path.read_text(errors="replace")
        for match in pattern.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            results.append((f"{path.relative_to(ascend)}:{line}", match[1]))
    return results
