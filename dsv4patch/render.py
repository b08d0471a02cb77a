"""Plain-text renderings of the library's reports (cli.py prints them)."""

from __future__ import annotations

from dsv4patch.apply import ApplyReport


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
