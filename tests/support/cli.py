"""Tree shapes, temporary series and CLI runs for the dsv4patch CLI tests."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support import trees

SHAPES = ("git-clone", "plain", "inside-repo")
GIT_ENV = {
    "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@localhost",
    "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@localhost",
    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
}
REAL_SERIES = trees.REPO / "patches"


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True, env={**os.environ, **GIT_ENV})
    return done.stdout


def make_tree(name: str, shape: str, root: Path) -> Path:
    """A copy of pristine `name` under `root`, laid out as `shape`."""
    if shape == "inside-repo":
        # An unrelated checkout that contains the tree as untracked files: where
        # a bare `git apply` reports success and changes nothing.
        outer = root / "outer"
        outer.mkdir(parents=True, exist_ok=True)
        if not (outer / ".git").exists():
            git(outer, "init", "-q", "-b", "main")
            (outer / "README").write_text("unrelated\n")
            git(outer, "add", "README")
            git(outer, "commit", "-q", "-m", "unrelated")
        return trees.copy_tree(name, outer / "work" / name)
    tree = trees.copy_tree(name, root / name)
    if shape == "git-clone":
        git(tree, "init", "-q", "-b", "main")
        git(tree, "add", "--all")
        git(tree, "commit", "-q", "-m", "v0.13.0")
        git(tree, "tag", "v0.13.0" if name == "vllm" else "v0.13.0rc3")
    return tree


def digest(tree: Path, skip: tuple[str, ...] = ()) -> str:
    """sha256 over every path, mode and content under `tree`, `.git` and the
    relative paths in `skip` excluded."""
    total = hashlib.sha256()
    for root, dirs, files in os.walk(tree):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for name in sorted(files) + [d + "/" for d in dirs]:
            path = Path(root, name.rstrip("/"))
            rel = path.relative_to(tree).as_posix()
            if rel in skip:
                continue
            total.update(f"{rel}\0{path.lstat().st_mode:o}\0".encode())
            if path.is_file() and not path.is_symlink():
                total.update(path.read_bytes())
    return total.hexdigest()


@dataclass
class Trees:
    vllm: Path
    ascend: Path

    @property
    def args(self) -> list[str]:
        return ["--vllm", str(self.vllm), "--vllm-ascend", str(self.ascend)]

    def digests(self) -> tuple[str, str]:
        return digest(self.vllm), digest(self.ascend)


def make_trees(shape: str, root: Path) -> Trees:
    return Trees(make_tree("vllm", shape, root), make_tree("vllm-ascend", shape, root))


def run(*args: str, series: Path | None = None, env: dict[str, str] | None = None,
        lock_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m dsv4patch ARGS` as a user would."""
    full_env = {**os.environ, "PYTHONPATH": str(trees.REPO), **(env or {})}
    if series is not None:
        full_env["DSV4PATCH_SERIES"] = str(series)
    if lock_dir is not None:
        full_env["DSV4PATCH_LOCK_DIR"] = str(lock_dir)
    return subprocess.run([sys.executable, "-m", "dsv4patch", *args],
                          capture_output=True, text=True, env=full_env, timeout=300)


def toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_series(dest: Path, entries: list[dict[str, str]],
                 sources: dict[str, bytes]) -> Path:
    """A series directory: the real bases, the given patches and a manifest."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REAL_SERIES / "bases", dest / "bases")
    shutil.copytree(REAL_SERIES / "profiles", dest / "profiles")
    lines = ['version = "0.0.0-test"']
    real = (REAL_SERIES / "series.toml").read_text()
    lines.append(real[real.index("[base.vllm]"):real.index("[[patch]]")]
                 if "[[patch]]" in real else real[real.index("[base.vllm]"):])
    for entry in entries:
        data = sources[entry["file"]]
        (dest / entry["file"]).write_bytes(data)
        lines.append("[[patch]]")
        fields = {**entry, "sha256": hashlib.sha256(data).hexdigest()}
        lines += [f"{k} = {toml_string(v)}" for k, v in fields.items()]
    (dest / "series.toml").write_text("\n".join(lines) + "\n")
    return dest


def real_entries() -> tuple[list[dict[str, str]], dict[str, bytes]]:
    """The repository's patches, as entries and contents for write_series."""
    import tomllib

    manifest = tomllib.loads((REAL_SERIES / "series.toml").read_text())
    entries = [{k: p[k] for k in ("file", "tree", "description", "origin")}
               for p in manifest.get("patch", [])]
    return entries, {e["file"]: (REAL_SERIES / e["file"]).read_bytes() for e in entries}


def header(description: str) -> str:
    return (f"Description: {description}\nOrigin: tests\nLast-Update: 2026-01-01\n"
            "---\n")


def append_patch(tree: str, rel: str, line: str) -> str:
    """A diff that appends `line` to the pristine `rel` (which ends in a newline)."""
    lines = (trees.pristine_tree(tree) / rel).read_text().splitlines()
    tail = lines[-3:]
    start = len(lines) - len(tail) + 1
    body = "".join(f" {text}\n" for text in tail)
    return (f"diff --git a/{rel} b/{rel}\n--- a/{rel}\n+++ b/{rel}\n"
            f"@@ -{start},{len(tail)} +{start},{len(tail) + 1} @@\n{body}+{line}\n")


def new_file_patch(rel: str, lines: list[str]) -> str:
    body = "".join(f"+{text}\n" for text in lines)
    return (f"diff --git a/{rel} b/{rel}\nnew file mode 100644\n--- /dev/null\n"
            f"+++ b/{rel}\n@@ -0,0 +1,{len(lines)} @@\n{body}")


def broken_patch(tree: str, rel: str) -> str:
    """A patch whose only hunk cannot match: its context line was altered."""
    good = append_patch(tree, rel, "# never applied")
    head, _, hunk = good.partition("@@ ")
    first_context = hunk.index("\n ") + 2
    broken = hunk[:first_context] + "NOT-IN-THE-FILE " + hunk[first_context:]
    return head + "@@ " + broken


def paths_of(data: bytes) -> list[str]:
    """The files a patch names in its `diff --git` lines."""
    return [line.split(" b/")[-1] for line in data.decode().splitlines()
            if line.startswith("diff --git")]


# Files no real patch is likely to touch, so the synthetic patches never collide.
VLLM_EXTRA = ["vllm/beam_search.py", "vllm/scalar_type.py", "vllm/collect_env.py"]
ASCEND_EXTRA = ["vllm_ascend/envs.py", "vllm_ascend/ascend_config.py"]
MARKER = "vllm/dsv4patch_test/marker.py"


def extended_entries() -> tuple[list[dict[str, str]], dict[str, bytes]]:
    """The real series plus 9001 (one vLLM file touched, MARKER created) and 9002
    (one vllm-ascend file touched), on files the real series leaves alone."""
    entries, sources = real_entries()
    taken = {rel for data in sources.values() for rel in paths_of(data)}
    vllm_rel = next(rel for rel in VLLM_EXTRA if rel not in taken)
    ascend_rel = next(rel for rel in ASCEND_EXTRA if rel not in taken)
    sources["9001-test-vllm.patch"] = (
        header("test: touch one file, add another")
        + append_patch("vllm", vllm_rel, "# dsv4patch test line")
        + new_file_patch(MARKER, ["MARK = 1"])).encode()
    sources["9002-test-ascend.patch"] = (
        header("test: touch one vllm-ascend file")
        + append_patch("vllm-ascend", ascend_rel, "# dsv4patch test line")).encode()
    entries += [
        {"file": "9001-test-vllm.patch", "tree": "vllm", "description": "t",
         "origin": "tests"},
        {"file": "9002-test-ascend.patch", "tree": "vllm-ascend", "description": "t",
         "origin": "tests"},
    ]
    return entries, sources
