"""Status, drift and check on trees holding things git never records: a directory
where a tracked file was, a named pipe, odd file names."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.support import cli, fakeroot
from tests.support.fixtures import fixture_lock_dir  # noqa: F401

VLLM = "vllm-workspace/vllm"


def _json(result) -> dict:
    return json.loads(result.stdout)


def test_a_directory_where_a_touched_file_was_is_drift_not_a_crash(
        tmp_path: Path, lock_dir: Path) -> None:
    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3", link=True)
    envs = root / VLLM / "vllm" / "envs.py"
    envs.unlink()
    envs.mkdir()
    (envs / "inner.py").write_text("x = 1\n")

    status = cli.run("status", "--json", "--root", str(root), lock_dir=lock_dir)
    drift = cli.run("drift", "--json", "--root", str(root), lock_dir=lock_dir)
    check = cli.run("check", "--root", str(root), lock_dir=lock_dir)

    assert status.returncode == 0, status.stderr
    (vllm,) = [t for t in _json(status)["trees"] if t["name"] == "vllm"]
    found = {d["path"]: d["code"] for d in vllm["drift"]["differences"]}
    assert found["vllm/envs.py"] == "missing"
    assert found["vllm/envs.py/inner.py"] == "added"
    assert drift.returncode == 1, drift.stderr
    assert check.returncode == 1 and "Internal error" not in check.stderr
    assert "vllm/envs.py" in check.stdout + check.stderr


def test_a_named_pipe_in_a_tree_is_not_read(tmp_path: Path, lock_dir: Path) -> None:
    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3", link=True)
    os.mkfifo(root / VLLM / "vllm" / "pipe.py")
    envs = root / VLLM / "vllm" / "envs.py"
    envs.unlink()
    os.mkfifo(envs)

    status = cli.run("status", "--json", "--root", str(root), lock_dir=lock_dir)
    check = cli.run("check", "--root", str(root), lock_dir=lock_dir)

    assert status.returncode == 0, status.stderr
    (vllm,) = [t for t in _json(status)["trees"] if t["name"] == "vllm"]
    found = {d["path"]: d["code"] for d in vllm["drift"]["differences"]}
    assert found["vllm/pipe.py"] == "added"
    assert found["vllm/envs.py"].startswith("5")
    assert check.returncode == 1 and "Internal error" not in check.stderr


def test_a_root_that_is_missing_or_a_file_is_refused_even_with_explicit_trees(
        tmp_path: Path, lock_dir: Path) -> None:
    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3", link=True)
    trees = ["--vllm", str(root / VLLM),
             "--vllm-ascend", str(root / "vllm-workspace/vllm-ascend")]
    a_file = tmp_path / "a-file"
    a_file.write_text("")

    missing = cli.run("status", "--json", "--root", str(tmp_path / "typo"), *trees,
                      lock_dir=lock_dir)
    not_dir = cli.run("status", "--json", "--root", str(a_file), lock_dir=lock_dir)

    assert missing.returncode == 1
    assert "does not exist" in _json(missing)["error"]
    assert not_dir.returncode == 1
    assert "is not a directory" in _json(not_dir)["error"]


def test_a_symlink_loop_at_a_touched_file_is_refused_not_a_crash(
        tmp_path: Path, lock_dir: Path) -> None:
    pristine = fakeroot.build(tmp_path / "pristine", "v0.13.0rc3", link=True)
    applied = fakeroot.build(tmp_path / "applied", "v0.13.0rc3")
    done = cli.run("apply", "--root", str(applied), lock_dir=lock_dir)
    assert done.returncode == 0, done.stderr
    for root in (pristine, applied):
        envs = root / VLLM / "vllm" / "envs.py"
        envs.unlink()
        envs.symlink_to("envs.py")
        before = cli.digest(root / VLLM)

        for command in ("status", "check", "apply", "revert"):
            result = cli.run(command, "--root", str(root), lock_dir=lock_dir)
            assert result.returncode in (0, 1), (command, result.stderr)
            assert "Internal error" not in result.stderr, command

        assert cli.digest(root / VLLM) == before



def test_odd_file_names_print_one_unambiguous_line_each(tmp_path: Path,
                                                        lock_dir: Path) -> None:
    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3", link=True)
    vllm = root / VLLM
    (vllm / "with space.py").write_text("")
    (vllm / "new\nline.py").write_text("")
    with open(os.path.join(os.fsencode(vllm), b"bad\xff.py"), "wb"):
        pass

    text = cli.run("drift", "--root", str(root), lock_dir=lock_dir).stdout

    added = [line for line in text.splitlines() if line.startswith("  added")]
    assert [line.split("warning  ", 1)[1] for line in added] == [
        '"bad\\377.py"', '"new\\nline.py"', "with space.py"]


def test_the_fingerprint_reads_no_host_file_and_no_endless_one(
        tmp_path: Path, lock_dir: Path) -> None:
    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3", link=True)
    # A link to itself by absolute path: never the host's /etc/os-release.
    (root / "etc" / "os-release").unlink()
    (root / "etc" / "os-release").symlink_to("/etc/os-release")
    # A version file that never ends, and a pipe nobody writes.
    toolkit = root / fakeroot.TOOLKIT
    for info in toolkit.glob("*-linux/ascend_toolkit_install.info"):
        info.unlink()
    (toolkit / "version.cfg").symlink_to("../../../../../dev/zero")
    (root / "dev").mkdir()
    (root / "dev" / "zero").symlink_to("/dev/zero")
    site = root / fakeroot.PYTHON_DIR
    (metadata,) = site.glob("torch-*.dist-info/METADATA")
    metadata.unlink()
    os.mkfifo(metadata)

    report = _json(cli.run("status", "--json", "--root", str(root),
                           lock_dir=lock_dir))

    environment = report["environment"]
    assert environment["os_id"] is None and environment["cann"] is None
    assert "torch" not in environment["packages"]
    assert environment["packages"]["vllm"] == "0.13.0+empty"


def test_an_undecodable_build_info_is_no_soc_evidence_not_a_crash(
        tmp_path: Path, lock_dir: Path) -> None:
    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3-a3", link=True)
    info = root / "vllm-workspace/vllm-ascend/vllm_ascend/_build_info.py"
    info.unlink()
    info.write_bytes(b"# \xff\xfe\n__device_type__ = 'A3'\n")

    result = cli.run("status", "--json", "--root", str(root), lock_dir=lock_dir)

    assert result.returncode == 0, result.stderr
    assert _json(result)["environment"]["soc"] == "A3"


def test_a_pipe_at_a_file_the_series_created_is_named_not_waited_on(
        tmp_path: Path, lock_dir: Path) -> None:
    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3")
    done = cli.run("apply", "--root", str(root), lock_dir=lock_dir)
    assert done.returncode == 0, done.stderr
    rel = "vllm/tokenizers/deepseek_v4.py"
    (root / VLLM / rel).unlink()
    os.mkfifo(root / VLLM / rel)

    status = cli.run("status", "--json", "--root", str(root), lock_dir=lock_dir)
    verify = cli.run("verify", "--json", "--root", str(root), lock_dir=lock_dir)

    assert status.returncode == 0, status.stderr
    (vllm,) = [t for t in _json(status)["trees"] if t["name"] == "vllm"]
    assert vllm["state"] == "edited after apply"
    assert verify.returncode == 1
    rows = {c["name"]: c for c in _json(verify)["checks"]}
    assert rows["vllm hashes"]["problems"] == [rel]
    assert rows["code"]["state"] == "skip" and rel in rows["code"]["detail"]


def test_json_names_an_undecodable_file_in_strict_utf8(tmp_path: Path,
                                                       lock_dir: Path) -> None:
    root = fakeroot.build(tmp_path / "root", "v0.13.0rc3", link=True)
    with open(os.path.join(os.fsencode(root / VLLM), b"bad\xff.py"), "wb"):
        pass

    result = cli.run("drift", "--json", "--root", str(root), lock_dir=lock_dir)

    # A lone surrogate escape is valid to Python's json but not to strict parsers.
    assert "\\udc" not in result.stdout
    result.stdout.encode("utf-8")
    paths = [d["path"] for t in _json(result)["trees"] for d in t["differences"]]
    assert '"bad\\377.py"' in paths
