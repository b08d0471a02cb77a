"""The series manifest and the shape of its patches, read without any tree."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dsv4patch import series as series_mod
from dsv4patch.diff import parse_diff
from dsv4patch.errors import PatchError
from tests.support import cli

TRICKY = b"""Description: tricky
Origin: tests
Last-Update: 2026-01-01
---
diff --git a/a.py b/a.py
--- a/a.py
+++ b/a.py
@@ -1,3 +1,3 @@
 x = 1
--- a removed line that looks like a file header
+++ an added line that looks like one too
 y = 2
@@ -10 +10,2 @@ def f():
 z = 3
+w = 4
\\ No newline at end of file
diff --git a/pkg/new.py b/pkg/new.py
new file mode 100644
--- /dev/null
+++ b/pkg/new.py
@@ -0,0 +1 @@
+NEW = True
diff --git a/old.py b/old.py
deleted file mode 100644
--- a/old.py
+++ /dev/null
@@ -1 +0,0 @@
-OLD = True
"""


def test_parse_diff_reads_files_hunks_and_kinds() -> None:
    files = parse_diff(TRICKY, "tricky.patch")
    assert [(f.path, f.new, f.deleted) for f in files] == [
        ("a.py", False, False), ("pkg/new.py", True, False), ("old.py", False, True)]
    assert files[0].hunk_starts == [1, 10]
    assert files[0].hunk_at(10) == 2 and files[0].hunk_at(5) is None


@pytest.mark.parametrize("extra", [
    b"diff --git a/x b/y\nrename from x\nrename to y\n",
    b"diff --git a/x.bin b/x.bin\nGIT binary patch\nliteral 0\n",
    b"diff --git a/x.bin b/x.bin\nBinary files a/x.bin and b/x.bin differ\n",
])
def test_renames_and_binary_changes_are_refused(extra: bytes) -> None:
    with pytest.raises(PatchError):
        parse_diff(TRICKY + extra, "odd.patch")


@pytest.mark.parametrize("mode", [b"new file mode 120000", b"new mode 160000",
                                  b"old mode 100644\nnew mode 120000"])
def test_modes_other_than_regular_files_are_refused(mode: bytes) -> None:
    odd = b"diff --git a/l b/l\n" + mode + b"\n"
    with pytest.raises(PatchError, match="only changes regular files"):
        parse_diff(TRICKY + odd, "mode.patch")


def test_regular_file_modes_are_accepted() -> None:
    executable = (b"diff --git a/run.sh b/run.sh\nold mode 100644\n"
                  b"new mode 100755\n")
    assert parse_diff(TRICKY + executable, "mode.patch")[-1].path == "run.sh"


def test_a_patch_without_a_diff_is_refused() -> None:
    with pytest.raises(PatchError, match="holds no git-style diff"):
        parse_diff(b"Description: nothing\n---\n", "empty.patch")


@pytest.mark.parametrize("path", ["/abs.py", "../up.py", "a/../../up.py", "a\\b.py"])
def test_paths_outside_the_tree_are_refused(path: str) -> None:
    with pytest.raises(PatchError, match="outside its tree"):
        series_mod.check_relative(path, "p.patch")


def test_the_repository_series_loads_and_verifies() -> None:
    loaded = series_mod.load(cli.REAL_SERIES)
    assert set(loaded.bases) == {"vllm", "vllm-ascend"}
    for patch in loaded.patches:
        text = patch.data.decode()
        assert text.startswith("Description: ") and "\nOrigin: " in text
        assert "\nLast-Update: " in text and "\n---\n" in text
        assert patch.paths and patch.sha256 == hashlib.sha256(patch.data).hexdigest()
    assert (cli.REAL_SERIES / "bases" / "vllm-0.13.0.gitblob").is_file()
    assert (cli.REAL_SERIES / "bases" / "vllm-ascend-0.13.0rc3.gitblob").is_file()


def test_series_location_follows_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    series = cli.write_series(tmp_path / "s", [], {})
    monkeypatch.setenv("DSV4PATCH_SERIES", str(series))
    assert series_mod.locate() == series
    assert series_mod.load().version == "0.0.0-test"
    monkeypatch.delenv("DSV4PATCH_SERIES")
    assert series_mod.locate() == cli.REAL_SERIES


@pytest.mark.parametrize("entry, words", [
    ({"file": "x.patch", "tree": "vllm-cuda"}, "bad patch entry"),
    ({"file": "../x.patch", "tree": "vllm"}, "bad patch entry"),
    ({"file": "missing.patch", "tree": "vllm", "sha256": "0"}, "is missing"),
])
def test_bad_manifest_entries_are_refused(entry: dict[str, str], words: str,
                                          tmp_path: Path) -> None:
    series = cli.write_series(tmp_path / "s", [], {})
    lines = ["[[patch]]"] + [f"{k} = {cli.toml_string(v)}" for k, v in entry.items()]
    with open(series / "series.toml", "a") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(PatchError, match=words):
        series_mod.load(series)


def test_base_manifests_match_the_pristine_trees() -> None:
    from dsv4patch import bases

    for tree, version in (("vllm", "0.13.0"), ("vllm-ascend", "0.13.0rc3")):
        recorded = (cli.REAL_SERIES / "bases" / f"{tree}-{version}.gitblob").read_text()
        assert bases.record(cli.trees.pristine_tree(tree)) == recorded
