"""Find vLLM modules that vllm-ascend replaces parts of at runtime.

vllm-ascend assigns over vLLM attributes from `vllm_ascend/patch/` when its
platform or workers start. A source patch to such a module can be silently
overridden then, so `verify` names the pairs. The scan reads the files with
`ast` and imports nothing.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PATCH_DIR = "vllm_ascend/patch"


@dataclass(frozen=True)
class Override:
    module: str  # the vLLM module the series changes
    target: str  # the dotted name vllm-ascend assigns to
    where: str  # path:line in the vllm-ascend tree


def module_name(relpath: str) -> str | None:
    """`vllm/a/b.py` -> `vllm.a.b`, `vllm/a/__init__.py` -> `vllm.a`; None for
    anything that is not a Python module."""
    if not relpath.endswith(".py"):
        return None
    parts = relpath[: -len(".py")].split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or None


def find(ascend_tree: Path, modules: list[str]) -> list[Override]:
    """Every assignment under vllm_ascend/patch/ that lands in one of `modules`."""
    found: list[Override] = []
    for path in sorted((ascend_tree / PATCH_DIR).rglob("*.py")):
        try:
            tree = ast.parse(path.read_bytes(), str(path))
        except (OSError, SyntaxError, ValueError):
            continue  # the plugin import check reports a file that does not parse
        where = path.relative_to(ascend_tree).as_posix()
        for target, line in _assigned_names(tree):
            module = _owner(target, modules)
            if module:
                found.append(Override(module, target, f"{where}:{line}"))
    return found


def _owner(target: str, modules: list[str]) -> str | None:
    owners = [m for m in modules if target.startswith(m + ".")]
    return max(owners, key=len) if owners else None


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
