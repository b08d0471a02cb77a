"""`dsv4patch.probe` on its own: its client set-up and its failure paths.

The checks themselves run against real servers in test_e2e_serving.py (all pass)
and test_e2e_unpatched.py (the forced tool choices fail).
"""

from __future__ import annotations

import sys

import pytest

from dsv4patch import probe
from dsv4patch.errors import PatchError
from tests.harness.launch import free_port


def test_missing_openai_is_a_patch_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)

    with pytest.raises(PatchError, match="needs the openai package") as info:
        probe.run("http://127.0.0.1:1/v1", "m", None, 1.0)

    assert "pip install openai" in info.value.hint


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000", "http://127.0.0.1:8000/", "http://127.0.0.1:8000/v1",
])
def test_url_with_or_without_v1(url: str) -> None:
    client = probe._client(url, None, 5.0)

    assert str(client.base_url).rstrip("/") == "http://127.0.0.1:8000/v1"


def test_unreachable_server_fails_every_check_without_raising() -> None:
    port = free_port()  # nothing listens there

    checks = probe.run(f"http://127.0.0.1:{port}/v1", "m", None, 5.0)

    assert [c.name for c in checks] == [name for name, _ in probe.CHECKS]
    assert not any(c.passed for c in checks)
    assert all("Connection" in c.detail for c in checks), checks[0].detail
