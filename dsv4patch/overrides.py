"""Source patches that vllm-ascend would silently override at runtime.

vllm-ascend replaces attributes of vLLM modules from `vllm_ascend/patch/` when
its platform plugin loads (e.g. `vllm.config.model.ModelConfig.is_deepseek_mla =
...`). A series hunk that changes such an attribute in vLLM's source would be
undone in the running server; this finds those pairs so `check` can say so,
and `verify` names every patched module such an assignment lands in. The scan
reads the files with `ast` and imports nothing.
"""

from __future__ import annotations

import ast
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


def in_modules(ascend: Path, modules: list[str]) -> list[tuple[str, str, str]]:
    """(module, dotted target, file:line) for each assignment landing in `modules`."""
    found = []
    for where, target in _assignments(ascend):
        owners = [m for m in modules if target.startswith(m + ".")]
        if owners:
            found.append((max(owners, key=len), target, where))
    return found


def _assignments(ascend: Path) -> list[tuple[str, str]]:
    """(file:line, dotted target) for each assignment to a module attribute in
    the patch dir, through `vllm.x.y = ...`, an imported name or setattr."""
    results: list[tuple[str, str]] = []
    for path in sorted((ascend / PATCH_DIR).rglob("*.py")):
        try:
            tree = ast.parse(path.read_bytes(), str(path))
        except (OSError, SyntaxError, ValueError):
            continue  # verify's plugin import reports a file that does not parse
        where = path.relative_to(ascend).as_posix()
        results += [(f"{where}:{line}", target)
                    for target, line in _assigned_names(tree)]
    return results


def _assigned_names(tree: ast.Module) -> list[tuple[str, int]]:
    """Dotted names assigned through attributes or setattr, imports resolved."""
    aliases = _aliases(tree)
    names = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == "setattr" and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant)):
            base = _dotted(node.args[0], aliases)
            if base:
                names.append((f"{base}.{node.args[1].value}", node.lineno))
            continue
        for target in targets:
            if isinstance(target, ast.Attribute):
                dotted = _dotted(target, aliases)
                if dotted:
                    names.append((dotted, node.lineno))
    return names


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted name it was imported as, anywhere in the file."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in aliases:
        return None
    return ".".join([aliases[node.id], *reversed(parts)])
