"""Trees that already support DeepSeek-V4 on their own, so the series is not needed.

- vLLM: a later release with built-in `deepseek_v4` modes, seen as one of the
  tokenizer, reasoning or tool parser modules below holding a `deepseek_v4`
  registration, in a tree that is not the 0.13.0 base (a version claim above it,
  or many sampled tracked files that differ). A 0.13.0 tree with such modules
  added by hand is the operators' earlier patch instead (known.py).
- vllm-ascend: the later `deepseekv4` images ship runtime patches
  `vllm_ascend/patch/**/patch_deepseek_v4*.py`; v0.13.0rc3 has none.

Our own applied series is never taken for native support: a module the journal
records, or equal to what the series creates, is ours.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

from dsv4patch import bases
from dsv4patch import journal as journal_mod
from dsv4patch import series as series_mod
from dsv4patch.errors import PatchError
from dsv4patch.identify import version_key
from dsv4patch.series import Series
from dsv4patch.trees import Tree

VLLM_MODULES = (
    "vllm/tokenizers/deepseek_v4.py",
    "vllm/reasoning/deepseek_v4_reasoning_parser.py",
    "vllm/tool_parsers/deepseekv4_tool_parser.py",
    "vllm/entrypoints/openai/tool_parsers/deepseekv4_tool_parser.py",
)
REGISTRATION = b"deepseek_v4"
ASCEND_PATCHES = "vllm_ascend/patch/**/patch_deepseek_v4*.py"
NOT_NEEDED = "the series is not needed"
HINT = "serve DeepSeek-V4 with this tree's own deepseek_v4 support; nothing was changed"


@dataclass
class Native:
    tree: str
    reason: str
    evidence: list[str] = field(default_factory=list)


def detect(tree: Tree, series: Series | None = None) -> Native | None:
    """Say why `tree` supports DeepSeek-V4 natively, or None."""
    if tree.name == "vllm-ascend":
        found = sorted(str(p.relative_to(tree.path))
                       for p in tree.path.glob(ASCEND_PATCHES))
        if found:
            return Native(tree.name, f"{tree.label} already patches vLLM for "
                          f"DeepSeek-V4 at runtime ({', '.join(found[:3])})", found)
        return None

    series = series or series_mod.load()
    foreign = _foreign_modules(series, tree)
    if not foreign:
        return None
    base = series.bases[tree.name]["version"]
    newer = _newer_claims(tree, base)
    if newer:
        why = f"it is a later release ({', '.join(newer)})"
    else:
        total = bases.sample_mismatches(tree.path, bases.load(tree.name, base))
        if total <= bases.OTHER_VERSION_THRESHOLD:
            return None  # the 0.13.0 base with modules added by hand: known.py
        why = f"it is not {tree.name} {base} ({total} sampled tracked files differ)"
    return Native(tree.name, f"{tree.label} has built-in deepseek_v4 support "
                  f"({', '.join(foreign)}), and {why}", foreign)


def refuse(tree: Tree, series: Series | None = None) -> None:
    """Raise PatchError naming the reason when `tree` needs no series."""
    found = detect(tree, series)
    if found is not None:
        raise PatchError(f"{NOT_NEEDED}: {found.reason}", hint=HINT)


def _foreign_modules(series: Series, tree: Tree) -> list[str]:
    """The DeepSeek-V4 modules present that register deepseek_v4 and are not ours."""
    ours = series_creates(series, tree.name)
    recorded = _journal_results(series, tree)
    foreign = []
    for rel in VLLM_MODULES:
        path = tree.path / rel
        try:
            # A pipe would block the read; drift and the hashes name it.
            if not path.is_file():
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if REGISTRATION not in data:
            continue
        if hashlib.sha256(data).hexdigest() in (ours.get(rel), recorded.get(rel)):
            continue
        foreign.append(rel)
    return foreign


def _journal_results(series: Series, tree: Tree) -> dict[str, str]:
    try:
        journal = journal_mod.read(tree.path, series.footprint(tree.name))
    except journal_mod.JournalDamaged:
        return {}
    if journal is None:
        return {}
    return {r.path: r.after for r in journal.files if r.after}


def series_creates(series: Series, tree: str) -> dict[str, str]:
    """sha256 of each file the series creates from nothing, read off its diffs."""
    return _created(tuple((p.file, p.data) for p in series.for_tree(tree)))


@functools.lru_cache(maxsize=4)
def _created(patches: tuple[tuple[str, bytes], ...]) -> dict[str, str]:
    created: dict[str, bytes] = {}
    touched_again: set[str] = set()
    for _, data in patches:
        for rel, body in _new_files(data):
            created[rel] = body
        touched_again |= {rel for rel in _modified_paths(data) if rel in created}
    # A created file that a later patch edits has no single diff for its content.
    return {rel: hashlib.sha256(body).hexdigest() for rel, body in created.items()
            if rel not in touched_again}


def _new_files(data: bytes) -> list[tuple[str, bytes]]:
    """(path, content) of every file a git-style diff creates."""
    found = []
    for section in data.split(b"\ndiff --git ")[1:]:
        head, _, _ = section.partition(b"\n")
        if b"\nnew file mode " not in section.split(b"\n@@", 1)[0]:
            continue
        rel = head.split(b" b/", 1)[-1].decode()
        lines = section.split(b"\n")
        body: list[bytes] = []
        started = False
        for line in lines:
            if line.startswith(b"@@"):
                started = True
            elif started and line.startswith(b"+"):
                body.append(line[1:] + b"\n")
            elif started and line.startswith(b"\\") and body:
                body[-1] = body[-1][:-1]  # "\ No newline at end of file"
        found.append((rel, b"".join(body)))
    return found


def _modified_paths(data: bytes) -> list[str]:
    paths = []
    for section in data.split(b"\ndiff --git ")[1:]:
        if b"\nnew file mode " not in section.split(b"\n@@", 1)[0]:
            paths.append(section.partition(b"\n")[0].split(b" b/", 1)[-1].decode())
    return paths


def _newer_claims(tree: Tree, base: str) -> list[str]:
    """The tree's version claims that name a release above `base`."""
    floor = version_key(base)
    claims = []
    for source, value in tree.versions.items():
        for version in value.split(", "):
            key = version_key(version)
            if key is not None and floor is not None and key > floor:
                claims.append(f"{source} says {version}")
    return claims
