"""`make demo` end to end: the README's main job must pass and leave the trees as found.

It also shows the unpatched v0.13.0 failing first (HTTP 400 under MTP + async).

It patches and reverts the image trees in the cache (the editable install), so it
refuses, and this test fails, if those trees are not pristine when it starts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_passes_and_leaves_the_trees_as_found() -> None:
    result = subprocess.run(
        [sys.executable, "tools/demo.py"], cwd=REPO, capture_output=True, text=True,
        timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)},
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "10/10 checks passed" in result.stdout
    assert "HTTP 400: async scheduling with spec decoding" in result.stdout
    assert re.search(r"^before: probe on v0\.13\.0 .* ok .*as expected$",
                     result.stdout, re.MULTILINE)
    assert re.search(r"^trees as found +ok ", result.stdout, re.MULTILINE)
    assert result.stdout.rstrip().endswith("demo passed")
