"""Image profiles: generated from the pristine trees, and each fake image root is
identified as the image it imitates, and as no other."""

from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from dsv4patch import bases, fingerprint, identify, profiles
from tests.support import cli, fakeroot
from tests.support.fixtures import fixture_lock_dir  # noqa: F401

VARIANTS = list(fakeroot.IMAGES)


def status(root: Path, lock_dir: Path, *args: str) -> dict:
    result = cli.run("status", "--json", "--root", str(root), *args,
                     lock_dir=lock_dir)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_record_profiles_regenerates_the_committed_data(tmp_path: Path) -> None:
    series = tmp_path / "patches"
    shutil.copytree(cli.REAL_SERIES, series,
                    ignore=shutil.ignore_patterns("bases", "profiles", ".*lock"))

    result = cli.run("record-profiles",
                     "--vllm", str(cli.trees.pristine_tree("vllm")),
                     "--vllm-ascend", str(cli.trees.pristine_tree("vllm-ascend")),
                     series=series)

    assert result.returncode == 0, result.stderr
    for sub in ("bases", "profiles"):
        names = sorted(p.name for p in (cli.REAL_SERIES / sub).iterdir())
        assert names == sorted(p.name for p in (series / sub).iterdir())
        match, mismatch, errors = filecmp.cmpfiles(cli.REAL_SERIES / sub,
                                                   series / sub, names, shallow=False)
        assert (mismatch, errors) == ([], []), f"regenerate {sub}/ with record-profiles"
    assert len(list((series / "profiles").glob("*.toml"))) == 4


@pytest.mark.parametrize("variant", VARIANTS)
def test_profiles_agree_with_the_images_as_written_down(variant: str) -> None:
    (profile,) = [p for p in profiles.load_all() if p.name == variant]
    image = fakeroot.IMAGES[variant]
    env = profile.environment

    assert env["os_id"] == image["os"]["ID"].lower()
    assert env["os_version"] == image["os"]["VERSION_ID"]
    assert (env["cann"], env["python"]) == (fakeroot.CANN, "3.11")
    assert (env["soc_version"], env["soc"]) == (image["soc"], image["device"])
    assert profile.packages["vllm"] == "==0.13.0"
    assert profile.packages["vllm-ascend"] == "==0.13.0rc3"
    assert profile.packages["torch-npu"] == "==2.8.0.post2"
    assert profile.trees["vllm"]["tag"] == "v0.13.0"
    # Both trees are shared by all four images and pinned by sha256.
    for tree in ("vllm", "vllm-ascend"):
        assert profiles.tree_manifest(profile, tree) == bases.load(
            tree, profile.trees[tree]["version"])


def test_a_tampered_manifest_is_refused(tmp_path: Path) -> None:
    series = tmp_path / "patches"
    shutil.copytree(cli.REAL_SERIES, series, ignore=shutil.ignore_patterns(".*lock"))
    with open(series / "bases" / "vllm-0.13.0.gitblob", "a") as f:
        f.write("100644 blob 0000000000000000000000000000000000000000\tx.py\n")
    (profile, *_) = profiles._load_all(series / "profiles")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DSV4PATCH_SERIES", str(series))
        with pytest.raises(profiles.PatchError, match="does not match the sha256"):
            profiles.tree_manifest(profile, "vllm")


def test_blob_hashes_are_what_git_computes(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_bytes(b"print('x')\n\x00binary\xff")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    for path in (sample, empty):
        git = subprocess.run(["git", "hash-object", str(path)], capture_output=True,
                             text=True, check=True).stdout.strip()
        assert bases.blob(path) == git
    assert bases.blob(tmp_path / "absent") is None


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_is_identified_as_itself(variant: str, tmp_path: Path,
                                             lock_dir: Path) -> None:
    root = fakeroot.build(tmp_path / "root", variant, link=True)

    image = status(root, lock_dir)["image"]

    assert image["image"] == variant
    assert image["confidence"] == "exact", image["reason"]
    assert image["runner_up"]["profile"] != variant
    assert image["runner_up"]["score"] < image["best"]["score"]
    verdicts = {e["item"]: e["verdict"] for e in image["best"]["evidence"]}
    assert set(verdicts.values()) == {"matched"}
    assert {"os", "CANN", "SoC", "python", "vllm tree", "vllm-ascend tree", "vllm",
            "vllm-ascend", "torch", "torch-npu", "transformers"} <= set(verdicts)
    assert image["trees"]["vllm"]["matched"] == image["trees"]["vllm"]["recorded"]


def test_an_unknown_root_is_an_ordinary_unknown_base(tmp_path: Path,
                                                     lock_dir: Path) -> None:
    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3", link=True)
    fakeroot.write_os_release(root, {"ID": "debian", "VERSION_ID": "12"})
    fakeroot.write_cann(root, "8.3.RC1")

    result = cli.run("status", "--root", str(root), lock_dir=lock_dir)

    assert result.returncode == 0, result.stderr
    assert "unknown base" in result.stdout
    report = status(root, lock_dir)
    image = report["image"]
    assert image["image"] == "unknown base"
    differing = {e["item"] for e in image["best"]["evidence"]
                 if e["verdict"] == "differs"}
    assert differing == {"os", "CANN"}
    assert report["environment"]["cann"] == "8.3.RC1"


def test_an_unreadable_soc_leaves_a2_and_a3_tied(tmp_path: Path,
                                                lock_dir: Path) -> None:
    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3-a3", link=True)
    (root / "vllm-workspace/vllm-ascend/vllm_ascend/_build_info.py").unlink()

    image = status(root, lock_dir)["image"]

    assert image["confidence"] == "ambiguous"
    assert sorted(image["tied"]) == ["v0.13.0rc3", "v0.13.0rc3-a3"]


def test_an_upgraded_package_is_drift_not_another_image(tmp_path: Path,
                                                        lock_dir: Path) -> None:
    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3-openeuler", link=True)
    fakeroot.write_dist_info(root, "transformers", "5.0.1")

    image = status(root, lock_dir)["image"]

    assert (image["image"], image["confidence"]) == ("v0.13.0rc3-openeuler", "likely")
    (transformers,) = [e for e in image["best"]["evidence"]
                       if e["item"] == "transformers"]
    assert (transformers["verdict"], transformers["found"]) == ("differs", "5.0.1")


def test_another_vllm_release_rules_every_profile_out(tmp_path: Path,
                                                      lock_dir: Path) -> None:
    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3", link=True)
    fakeroot.write_dist_info(root, "vllm", "0.14.1")

    image = status(root, lock_dir)["image"]

    assert image["image"] == "unknown base"
    assert "vllm differs" in image["reason"]


def test_the_cann_version_falls_back_to_version_cfg(tmp_path: Path) -> None:
    toolkit = tmp_path / fakeroot.TOOLKIT
    toolkit.mkdir(parents=True)
    (toolkit / "version.cfg").write_text(
        "# version\ntoolkit_running_version=[8.5.1:8.5.1.B010]\n")

    found = fingerprint.read(tmp_path)

    assert found.cann == "8.5.1"
    assert found.os_id is None and found.soc is None and found.python is None


@pytest.mark.parametrize(("version", "spec", "ok"), [
    ("0.13.0+empty", "==0.13.0", True), ("2.8.0", "==2.8.0.post2", False),
    ("2.8.0.post2", "==2.8.0.post2", True), ("4.57.6", ">=4.57.4, <5", True),
    ("5.0.0", ">=4.57.4, <5", False), ("0.13.0rc3", "==0.13.0", False),
    ("0.13.0rc3", "<0.13.0", True), ("1.26.4", "<2.0.0", True),
    ("0.1.27", ">=0.1.30", False), ("4.57.6", "~=4.57.0", True),
    ("4.58.0", "~=4.57.0", False), ("2.8.1", "==2.8.*", True),
])
def test_version_specifiers(version: str, spec: str, ok: bool) -> None:
    assert identify.satisfies(version, spec) is ok


def test_a_git_clone_of_vllm_is_the_same_image(tmp_path: Path,
                                               lock_dir: Path) -> None:
    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3-a3", link=True,
                          git_clone=True)

    report = status(root, lock_dir)

    (vllm, _) = report["trees"]
    assert vllm["shape"] == "git clone" and vllm["versions"]["git tag"] == "0.13.0"
    assert vllm["drift"]["differences"] == []
    assert report["image"]["image"] == "v0.13.0rc3-a3"


def test_the_python_that_serves_is_the_one_vllm_is_installed_in(
        tmp_path: Path) -> None:
    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3", link=True)
    # The distribution's own python3, found first by the search order.
    system = (root / "usr/local/python3.10.12/lib/python3.10/site-packages"
              / "six-1.16.0.dist-info")
    system.mkdir(parents=True)
    (system / "METADATA").write_text("Name: six\nVersion: 1.16.0\n")

    found = fingerprint.read(root)

    assert found.python == "3.11"
    assert found.packages["six"] == "1.16.0"
    assert found.packages["torch-npu"] == "2.8.0.post2"
    assert found.sources["python"] == str(root / fakeroot.PYTHON_DIR)


def test_absolute_symlinks_in_a_root_stay_inside_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text('ID="openEuler"\nVERSION_ID="24.03"\n')
    (root / "etc").mkdir()
    (root / "etc/os-release").symlink_to("/usr/lib/os-release")
    toolkit = root / "usr/local/Ascend/ascend-toolkit"
    (toolkit / "8.5.1/x86_64-linux").mkdir(parents=True)
    (toolkit / "8.5.1/x86_64-linux/ascend_toolkit_install.info").write_text(
        "version=8.5.1\n")
    (toolkit / "latest").symlink_to("/usr/local/Ascend/ascend-toolkit/8.5.1")
    (root / "loop").symlink_to("/loop")

    found = fingerprint.read(root)

    assert (found.os_id, found.os_version, found.cann) == ("openeuler", "24.03",
                                                           "8.5.1")
    assert found.sources["os"] == str(root / "usr/lib/os-release")
    assert fingerprint.inside(root, "loop/etc") == root / "loop" / "etc"
