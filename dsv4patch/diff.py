"""Read the shape of a git-style diff: which files, which hunks, what kind."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dsv4patch.errors import PatchError

_HUNK = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
# Renames, copies and binary deltas would need more than content hashes to undo.
_UNSUPPORTED = (b"rename from ", b"copy from ", b"GIT binary patch", b"Binary files ")
_MODE_LINES = (b"new file mode ", b"deleted file mode ", b"new mode ", b"old mode ")
# Regular files only: a symlink (120000) or submodule (160000) created by a patch
# could point anywhere, and the journal only knows how to hash and restore bytes.
_REGULAR_MODES = (b"100644", b"100755")


@dataclass
class FileDiff:
    path: str
    new: bool = False
    deleted: bool = False
    hunk_starts: list[int] = field(default_factory=list)
    # Hunk-header context and every added or removed line, for name lookups.
    changed: list[str] = field(default_factory=list)

    def hunk_at(self, line: int) -> int | None:
        """Return the 1-based number of the hunk whose old side starts at `line`."""
        for number, start in enumerate(self.hunk_starts, 1):
            if start == line:
                return number
        return None


def parse_diff(data: bytes, name: str) -> list[FileDiff]:
    """Return the files a patch touches; raise PatchError for shapes we refuse."""
    lines = data.split(b"\n")
    files: list[FileDiff] = []
    current: FileDiff | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if line.startswith(b"diff --git "):
            current = FileDiff(_git_header_path(line, name))
            files.append(current)
        elif current is None:
            continue  # the DEP-3 header before the first diff
        elif line.startswith(_UNSUPPORTED):
            raise PatchError(f"patch {name}: {current.path} is a rename, copy or "
                             "binary change, which the series does not support",
                             hint="regenerate the patch with --no-renames as text")
        elif line.startswith(_MODE_LINES):
            _check_mode(line, current, name)
            current.new = current.new or line.startswith(b"new file mode")
            current.deleted = current.deleted or line.startswith(b"deleted file mode")
        elif line.startswith((b"--- ", b"+++ ")):
            _check_side(line, current, name)
        elif (match := _HUNK.match(line)) is not None:
            current.hunk_starts.append(int(match[1]))
            current.changed.append(line[match.end():].decode("utf-8", "replace"))
            index = _read_hunk(lines, index, match, current.changed)
    if not files:
        raise PatchError(f"patch {name} holds no git-style diff",
                         hint="patches start with a header, then `diff --git` sections")
    return files


def _git_header_path(line: bytes, name: str) -> str:
    text = line[len(b"diff --git "):].decode("utf-8", "replace")
    half = len(text) // 2
    old, new = text[:half], text[half + 1:]
    if not (old.startswith("a/") and new.startswith("b/") and old[2:] == new[2:]):
        raise PatchError(f"patch {name}: cannot read the header {line!r}",
                         hint="patches use a/ and b/ prefixes and no renames")
    return new[2:]


def _check_mode(line: bytes, current: FileDiff, name: str) -> None:
    mode = line.rsplit(b" ", 1)[-1].strip()
    if mode not in _REGULAR_MODES:
        raise PatchError(f"patch {name}: {current.path} gets mode "
                         f"{mode.decode('ascii', 'replace')}; the series only "
                         "changes regular files", hint="regenerate the patch "
                         "without symlinks or submodules")


def _check_side(line: bytes, current: FileDiff, name: str) -> None:
    side = line[4:].split(b"\t")[0].decode("utf-8", "replace")
    if side == "/dev/null":
        return
    if side[2:] != current.path or side[:2] not in ("a/", "b/"):
        raise PatchError(f"patch {name}: {side!r} does not match {current.path!r}",
                         hint="regenerate the patch with git diff")


def _read_hunk(lines: list[bytes], index: int, match: re.Match[bytes],
               changed: list[str]) -> int:
    old = int(match[2]) if match[2] is not None else 1
    new = int(match[4]) if match[4] is not None else 1
    while (old > 0 or new > 0) and index < len(lines):
        line = lines[index]
        index += 1
        if line.startswith(b"\\"):
            continue  # "\ No newline at end of file"
        if line.startswith((b"-", b"+")):
            changed.append(line[1:].decode("utf-8", "replace"))
        if line.startswith(b"-"):
            old -= 1
        elif line.startswith(b"+"):
            new -= 1
        else:
            old -= 1
            new -= 1
    return index
