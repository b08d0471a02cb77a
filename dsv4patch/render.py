"""Plain-text renderings of the library's reports (cli.py prints them)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from dsv4patch.apply import ApplyReport
from dsv4patch.check import CheckReport
from dsv4patch.drift import DriftReport, TreeDrift
from dsv4patch.identify import Identification
from dsv4patch.revert import RevertReport
from dsv4patch.status import StatusReport
from dsv4patch.verify import VerifyReport

# More foreign differences than this and the text lists only the first ones.
DRIFT_SHOWN = 200


def apply_text(report: ApplyReport) -> str:
    if not report.trees:
        return f"series {report.series_version}: no patches, nothing to do"
    lines = []
    for tree in report.trees:
        note = " (recovered an interrupted run first)" if tree.recovered else ""
        lines.append(f"{tree.name} ({tree.path}): {tree.state}, "
                     f"{len(tree.files)} files{note}")
    lines.append(f"series {report.series_version}: {report.state}")
    return "\n".join(lines)


def check_text(report: CheckReport) -> str:
    lines = []
    for tree in report.trees:
        facts = [tree.shape] if tree.shape else []
        facts += [_versions(tree.versions)] if tree.versions else []
        facts += [f"journal {tree.journal}"] if tree.journal != "none" else []
        lines.append(f"{tree.name} ({tree.path})" + (": " if facts else "")
                     + ", ".join(facts))
        if tree.problem:
            lines.append(f"  problem: {tree.problem}")
        if tree.carries:
            lines.append(f"  series {tree.carries} applied" + (
                f"; would upgrade {tree.carries} -> {report.series_version}"
                if report.state == "would upgrade" else ""))
        for outcome in tree.patches:
            lines.append(f"  {outcome.patch}: {outcome.state}")
            lines += [f"    {problem}" for problem in outcome.problems]
            lines += [f"    {rel}: {state}" for rel, state in outcome.files.items()
                      if not outcome.problems]
    lines += [f"note: {note}" for note in report.notes]
    lines += [f"problem: {report.refusal}"] if report.refusal else []
    lines.append(f"series {report.series_version}: {report.state}")
    return "\n".join(lines)


def revert_text(report: RevertReport) -> str:
    lines = [f"{t.name} ({t.path}): {t.state}, {len(t.files)} files"
             for t in report.trees]
    return "\n".join([*lines, report.state])


def status_text(report: StatusReport) -> str:
    lines = []
    for tree in report.trees:
        applied = f", series {tree.applied_series}" if tree.applied_series else ""
        lines.append(f"{tree.name} ({tree.path}): {tree.state}{applied} "
                     f"[journal: {tree.journal}; {tree.shape}]")
        if tree.native:
            lines.append(f"  not needed: {tree.native}")
        if tree.note:
            lines.append(f"  note: {tree.note}")
        lines += [f"  patch {name}: {state}" for name, state in tree.patches.items()]
        lines += [f"    {rel}: {state}" for rel, state in tree.files.items()]
    if report.image is not None:
        lines += image_text(report.image, report.root)
    for tree in report.trees:
        if tree.drift is not None:
            lines += _drift_lines(tree.drift)
    if not report.series_needed:
        lines.append("series: not needed, these trees support DeepSeek-V4 "
                     "themselves (see above); apply refuses")
    lines.append(f"series in this release: {report.series_version}")
    return "\n".join(lines)


def image_text(image: Identification, root: str) -> list[str]:
    """The matched image with its evidence, and the runner-up."""
    lines = [f"image (root {root}): {image.image} [{image.confidence}: "
             f"{image.reason}]"]
    if image.best is not None:
        lines.append(f"  evidence for {image.best.profile}:")
        width = max(len(e.item) for e in image.best.evidence)
        for e in image.best.evidence:
            found = f" (found {e.found})" if e.found else ""
            lines.append(f"    {e.item:<{width}}  {e.verdict:<8} {e.expected}{found}")
    if image.runner_up is not None:
        other = image.runner_up
        differs = [e.item for e in other.evidence if e.verdict == "differs"]
        lines.append(f"  runner-up: {other.profile} (score {other.score}, best "
                     f"{image.best.score if image.best else 0}; differs: "
                     f"{', '.join(differs) or 'nothing'})")
    return lines


def _drift_lines(tree: TreeDrift) -> list[str]:
    lines = [f"drift of {tree.name} ({tree.path}) against {tree.base}: "
             f"{tree.checked} files checked, {len(tree.series_changes)} changed by "
             f"this series, {len(tree.differences)} foreign"]
    shown = tree.differences[:DRIFT_SHOWN]
    for diff in shown:
        mark = "BLOCKING" if diff.blocking else "warning"
        lines.append(f"  {diff.code:<8} {mark:<8} {quoted(diff.path)}")
    if len(tree.differences) > len(shown):
        lines.append(f"  ... {len(tree.differences) - len(shown)} more "
                     "(--json lists all)")
    if tree.series_changes:
        lines.append("  this series' own changes:")
        lines += [f"  {d.code:<8} series   {quoted(d.path)}"
                  for d in tree.series_changes]
    return lines


def report_json(report: Any) -> str:
    """A report as JSON that strict parsers read: a string holding bytes that
    are not UTF-8 (an undecodable file name) is given in its quoted form."""
    return json.dumps(_strict(dataclasses.asdict(report)), indent=2)


def _strict(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return quoted(value)
        return value
    if isinstance(value, dict):
        return {_strict(k): _strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict(v) for v in value]
    return value


def quoted(path: str) -> str:
    """A file name as one printable line: as is when it is plain, else quoted
    in the manner of git (C escapes, undecodable bytes in octal)."""
    if path.isprintable() and '"' not in path and "\\" not in path:
        try:
            path.encode()
            return path
        except UnicodeEncodeError:
            pass
    escapes = {"\n": "\\n", "\t": "\\t", '"': '\\"', "\\": "\\\\"}
    out = []
    for char in path:
        if char in escapes:
            out.append(escapes[char])
        elif char.isprintable() and not 0xDC80 <= ord(char) <= 0xDCFF:
            out.append(char)
        else:
            out += [f"\\{byte:03o}"
                    for byte in char.encode("utf-8", "surrogateescape")]
    return '"' + "".join(out) + '"'


def drift_text(report: DriftReport) -> str:
    return "\n".join(line for tree in report.trees for line in _drift_lines(tree))


def verify_text(report: VerifyReport) -> str:
    width = max((len(c.name) for c in report.checks), default=5)
    lines = [f"{c.state.upper():<4}  {c.name:<{width}}  {c.detail}"
             for c in report.checks]
    lines.append(f"series {report.series_version} in {report.python}: {report.state}")
    return "\n".join(lines)


def probe_table(checks: Sequence[Any]) -> str:
    width = max((len(c.name) for c in checks), default=4)
    lines = [f"{'check':<{width}}  result  detail"]
    for c in checks:
        verdict = "pass" if c.passed else "FAIL"
        lines.append(f"{c.name:<{width}}  {verdict:<6}  {c.detail}")
    passed = sum(c.passed for c in checks)
    lines.append(f"{passed}/{len(checks)} checks passed")
    return "\n".join(lines)


def probe_json(checks: Sequence[Any]) -> str:
    rows = [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in checks]
    return json.dumps({"checks": rows, "passed": all(c.passed for c in checks)},
                      indent=2)


def _versions(versions: dict[str, str]) -> str:
    return ", ".join(f"{source} {version}" for source, version in versions.items())
