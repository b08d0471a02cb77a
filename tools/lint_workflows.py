"""What the workflow schema cannot say: references between the parts of a workflow.

check-jsonschema (`make lint-workflows`) validates keys and types; a job that
`needs` a job that does not exist, a job with no steps, a `${{ matrix.x }}` that
names no matrix key, or an action used without a version all pass it and fail
only on GitHub. This checks those four, on the files named.

    python tools/lint_workflows.py .github/workflows/*.yml

It reads YAML with ruamel.yaml, which check-jsonschema brings: the lint runs before
anything else is installed in the venv.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ruamel.yaml import YAML

MATRIX_REF = re.compile(r"\bmatrix\.([A-Za-z_][\w-]*)")


def strings(node: object) -> list[str]:
    """Every string in a parsed YAML node, keys and values."""
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in strings(key) + strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return [node] if isinstance(node, str) else []


def problems(workflow: dict) -> list[str]:
    """Every broken reference in a parsed workflow, as `job: what` lines."""
    jobs = workflow.get("jobs") or {}
    found = []
    for name, job in jobs.items():
        if not isinstance(job, dict):
            continue
        needs = job.get("needs", [])
        for need in [needs] if isinstance(needs, str) else needs:
            if need not in jobs:
                found.append(f"{name}: needs {need!r}, which is not a job here")

        # A reusable-workflow call has no steps of its own; any other job must.
        if "uses" not in job and not job.get("steps"):
            found.append(f"{name}: no steps")

        matrix = (job.get("strategy") or {}).get("matrix") or {}
        keys = set(matrix) if isinstance(matrix, dict) else set()
        for entry in (matrix.get("include") or []) if isinstance(matrix, dict) else []:
            keys |= set(entry) if isinstance(entry, dict) else set()
        keys -= {"include", "exclude"}
        used = {key for text in strings(job) for key in MATRIX_REF.findall(text)}
        for key in sorted(used - keys):
            found.append(f"{name}: matrix.{key} is not a key of its matrix")

        for step in job.get("steps") or []:
            used = step.get("uses", "") if isinstance(step, dict) else ""
            local = used.startswith(("./", "docker://"))
            if used and not local and "@" not in used:
                found.append(f"{name}: {used} has no @version")
    return found


def main(paths: list[str]) -> int:
    failed = 0
    for path in paths:
        for problem in problems(YAML(typ="safe").load(Path(path).read_text())):
            print(f"{path}: {problem}", file=sys.stderr)
            failed = 1
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
