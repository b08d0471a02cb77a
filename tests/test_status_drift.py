"""The drift report of `status`, residue, the series' own changes, and trees
that support DeepSeek-V4 natively (status says so, check and apply refuse)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tests.support import cli, fakeroot
from tests.support.fixtures import fixture_lock_dir  # noqa: F401

VLLM = "vllm-workspace/vllm"
ASCEND = "vllm-workspace/vllm-ascend"


def status(root: Path, lock_dir: Path) -> dict:
    result = cli.run("status", "--json", "--root", str(root), lock_dir=lock_dir)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def drift_of(report: dict, tree: str) -> dict:
    (found,) = [t for t in report["trees"] if t["name"] == tree]
    return found["drift"]


def codes(entries: list[dict]) -> dict[str, str]:
    return {d["path"]: d["code"] for d in entries}


def apply(root: Path, lock_dir: Path) -> None:
    result = cli.run("apply", "--root", str(root), lock_dir=lock_dir)
    assert result.returncode == 0, result.stderr


def test_an_edit_a_deletion_an_addition_and_a_mode_change(tmp_path: Path,
                                                          lock_dir: Path) -> None:
    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3", link=True)
    vllm = root / VLLM
    fakeroot.edit(vllm / "README.md", "edited\n")
    (vllm / "vllm/logger.py").unlink()
    (root / ASCEND / "vllm_ascend/local_tweak.py").write_text("x = 1\n")
    script = vllm / "setup.py"
    fakeroot.edit(script, script.read_text())  # a new inode: chmod stays local
    script.chmod(0o755)

    report = status(root, lock_dir)

    assert codes(drift_of(report, "vllm")["differences"]) == {
        "README.md": "5", "vllm/logger.py": "missing", "setup.py": "M"}
    assert codes(drift_of(report, "vllm-ascend")["differences"]) == {
        "vllm_ascend/local_tweak.py": "added"}
    text = cli.run("status", "--root", str(root), lock_dir=lock_dir).stdout
    assert "  missing  warning  vllm/logger.py" in text
    assert "  added    warning  vllm_ascend/local_tweak.py" in text
    # The image is still recognised: a few edits are drift, not another base.
    assert report["image"]["image"] == "v0.13.0rc3"


def test_build_residue_is_ignored(tmp_path: Path, lock_dir: Path) -> None:
    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3-a3", link=True)
    vllm, ascend = root / VLLM, root / ASCEND
    cache = vllm / "vllm" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "envs.cpython-311.pyc").write_bytes(b"\x00bytecode")
    (vllm / "vllm" / "stray.pyc").write_bytes(b"\x00")
    (vllm / "vllm" / "_C.abi3.so").write_bytes(b"\x7fELF")
    (vllm / "vllm" / "_version.py").write_text("__version__ = version = '0.13.0'\n")
    (vllm / "vllm.egg-info").mkdir()
    (vllm / "vllm.egg-info" / "PKG-INFO").write_text("Name: vllm\n")
    (vllm / "rust" / "target" / "release").mkdir(parents=True)
    (vllm / "rust" / "target" / "release" / "libparser.so").write_bytes(b"\x7fELF")
    (ascend / "vllm_ascend" / "_version.py").write_text("version = '0.13.0rc3'\n")
    (ascend / "vllm_ascend" / "vllm_ascend_C.cpython-311.so").write_bytes(b"\x7f")

    report = status(root, lock_dir)

    assert drift_of(report, "vllm")["differences"] == []
    assert drift_of(report, "vllm-ascend")["differences"] == []
    assert report["image"]["image"] == "v0.13.0rc3-a3"


def test_the_series_own_changes_are_kept_apart_from_foreign_ones(
        tmp_path: Path, lock_dir: Path) -> None:
    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3-openeuler")
    apply(root, lock_dir)
    vllm = root / VLLM
    (vllm / "README.md").write_text("foreign\n")
    with open(vllm / "vllm/envs.py", "a") as f:
        f.write("# edited after apply\n")

    report = status(root, lock_dir)

    drift = drift_of(report, "vllm")
    ours = codes(drift["series_changes"])
    assert ours["vllm/tokenizers/deepseek_v4.py"] == "added"
    assert ours["vllm/config/model.py"] == "5"
    assert "vllm/envs.py" not in ours and "README.md" not in ours
    foreign = {d["path"]: (d["code"], d["blocking"]) for d in drift["differences"]}
    assert foreign == {"README.md": ("5", False), "vllm/envs.py": ("5", True)}
    assert codes(drift_of(report, "vllm-ascend")["series_changes"]) == {
        "docs/source/tutorials/DeepSeek-V4.md": "5"}
    assert report["series_needed"] is True
    assert report["image"]["image"] == "v0.13.0rc3-openeuler"

    # Without its journal the series is still recognised by its content.
    shutil.rmtree(vllm / ".dsv4patch")
    (vllm / "vllm/envs.py").unlink()
    shutil.copy(cli.trees.pristine_tree("vllm") / "vllm/envs.py", vllm / "vllm/envs.py")
    apply_again = cli.run("apply", "--root", str(root), lock_dir=lock_dir)
    assert apply_again.returncode == 1  # envs.py is no longer patched: partly
    drift = drift_of(status(root, lock_dir), "vllm")
    assert "vllm/tokenizers/deepseek_v4.py" in codes(drift["series_changes"])
    assert codes(drift["differences"]) == {"README.md": "5"}


def _native_vllm(tree: Path) -> None:
    """Turn a vLLM copy into a later release with its own deepseek_v4 modes."""
    (tree / "vllm" / "_version.py").unlink(missing_ok=True)
    (tree / "vllm" / "_version.py").write_text("__version__ = version = '0.14.0'\n")
    for rel in ("vllm/tokenizers/deepseek_v4.py",
                "vllm/reasoning/deepseek_v4_reasoning_parser.py",
                "vllm/tool_parsers/deepseekv4_tool_parser.py"):
        (tree / rel).write_text(f'# upstream module\nNAME = "deepseek_v4"  # {rel}\n')


def _refused_unchanged(root: Path, lock_dir: Path, words: str) -> None:
    trees = cli.Trees(root / VLLM, root / ASCEND)
    before = trees.digests()
    for command in ("check", "apply"):
        result = cli.run(command, "--root", str(root), lock_dir=lock_dir)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert "Error: the series is not needed: " in result.stderr
        assert words in result.stdout + result.stderr
    assert trees.digests() == before
    assert not (root / VLLM / ".dsv4patch").exists()


def test_a_vllm_with_native_support_needs_no_series(tmp_path: Path,
                                                    lock_dir: Path) -> None:
    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3")
    _native_vllm(root / VLLM)

    report = status(root, lock_dir)

    assert report["series_needed"] is False
    (vllm,) = [t for t in report["trees"] if t["name"] == "vllm"]
    assert vllm["state"] == "not needed"
    assert "0.14.0" in vllm["native"] and "deepseek_v4.py" in vllm["native"]
    text = cli.run("status", "--root", str(root), lock_dir=lock_dir).stdout
    assert "series: not needed" in text
    _refused_unchanged(root, lock_dir, "later release")


def test_a_vllm_ascend_with_deepseek_v4_runtime_patches_needs_no_series(
        tmp_path: Path, lock_dir: Path) -> None:
    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3-a3")
    patch_dir = root / ASCEND / "vllm_ascend" / "patch" / "worker"
    (patch_dir / "patch_deepseek_v4_attention.py").write_text("# runtime patch\n")

    report = status(root, lock_dir)

    assert report["series_needed"] is False
    (ascend,) = [t for t in report["trees"] if t["name"] == "vllm-ascend"]
    assert "patch_deepseek_v4_attention.py" in ascend["native"]
    _refused_unchanged(root, lock_dir, "patch_deepseek_v4_attention.py")


def test_our_applied_series_is_never_native_support(tmp_path: Path,
                                                     lock_dir: Path) -> None:
    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3")
    apply(root, lock_dir)
    # Even claiming a later version, our own modules are ours.
    (root / VLLM / "vllm" / "_version.py").write_text("version = '0.14.0'\n")
    shutil.rmtree(root / VLLM / ".dsv4patch")

    report = status(root, lock_dir)

    assert report["series_needed"] is True
    assert all(t["native"] == "" for t in report["trees"])


def test_drift_takes_root_and_explicit_trees_win(tmp_path: Path,
                                                 lock_dir: Path) -> None:
    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3", link=True)
    other = fakeroot.build(tmp_path / "other", "v0.13.0rc3", link=True)
    fakeroot.edit(other / VLLM / "README.md", "other\n")

    plain = cli.run("drift", "--json", "--root", str(root), lock_dir=lock_dir)
    mixed = cli.run("drift", "--json", "--root", str(root),
                    "--vllm", str(other / VLLM), lock_dir=lock_dir,
                    env={"DSV4PATCH_VLLM": os.devnull})

    assert plain.returncode == 0 and mixed.returncode == 0, mixed.stderr
    assert [t["differences"] for t in json.loads(plain.stdout)["trees"]] == [[], []]
    vllm = json.loads(mixed.stdout)["trees"][0]
    assert vllm["path"] == str(other / VLLM)
    assert codes(vllm["differences"]) == {"README.md": "5"}


def test_modules_added_by_hand_to_the_base_release_are_not_native(
        tmp_path: Path) -> None:
    from dsv4patch import native, series, trees

    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3", link=True)
    for rel in ("vllm/tokenizers/deepseek_v4.py",
                "vllm/reasoning/deepseek_v4_reasoning_parser.py"):
        (root / VLLM / rel).write_text('NAME = "deepseek_v4"\n')
    tree = trees.resolve("vllm", root / VLLM)

    # The 0.13.0 tree with hand-added modules is the earlier patch's case.
    assert native.detect(tree, series.load()) is None


def test_another_release_without_a_version_claim_is_recognised_by_its_files(
        tmp_path: Path) -> None:
    from dsv4patch import bases, native, series, trees

    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3", link=True)
    vllm = root / VLLM
    (vllm / "vllm/tokenizers/deepseek_v4.py").write_text('MODE = "deepseek_v4"\n')
    tree = trees.resolve("vllm", vllm)
    assert native.detect(tree, series.load()) is None
    sampled = sorted(bases.load("vllm", "0.13.0"))[::bases.SAMPLE_EVERY]
    for rel in sampled[:bases.OTHER_VERSION_THRESHOLD + 1]:
        fakeroot.edit(vllm / rel, "# from a later release\n")

    found = native.detect(tree, series.load())

    assert found is not None
    assert "11 sampled tracked files differ" in found.reason
    assert found.evidence == ["vllm/tokenizers/deepseek_v4.py"]
