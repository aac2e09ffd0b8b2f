"""Writes a GradeReport four ways: terminal table, Gradescope results.json, JUnit XML, Markdown.

Every writer works from the same GradeReport, so the four never disagree.
"""
from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

from .environment import one_line
from .results import GradeReport

STATUS = {"passed": "PASS", "failed": "FAIL", "not_graded": "N/G"}


def _pts(x: float) -> str:
    return f"{x:g}"


def terminal(report: GradeReport, verbose: bool = True) -> str:
    lines = [f"Grading {report.impl}  ({one_line(report.environment)})", ""]
    for a in report.assignments:
        lines.append(f"== {a.name}: {a.title} ==")
        if a.error:
            lines.append(f"   ! {a.error}")
        lines += [f"   note: {n}" for n in a.notes]
        if verbose:
            width = max((len(t.nodeid.split("::")[-1]) for t in a.tests), default=10)
            for t in a.tests:
                short = t.nodeid.split("::")[-1]
                pts = f"{_pts(t.score)}/{_pts(t.max_score)}"
                head = f"   {STATUS.get(t.status, t.status):4} {pts:>9}  {short:<{width}}"
                if len(head) + len(t.reason) + 2 <= 160:
                    lines.append(f"{head}  {t.reason}" if t.reason else head)
                else:  # a long reason in full, wrapped under the test's name
                    lines.append(head)
                    lines += textwrap.wrap(t.reason, 110, initial_indent=" " * 8, subsequent_indent=" " * 8,
                                           break_on_hyphens=False)
        ung = f", {_pts(a.ungraded_max)} more not graded here" if a.ungraded_max else ""
        lines.append(f"   total {_pts(a.score)}/{_pts(a.graded_max)}{ung}")
        lines.append("")
    ung = (f"  ({_pts(report.ungraded_max)} points not graded here: they need a GPU or a baseline this machine lacks)"
           if report.ungraded_max else "")
    lines.append(f"TOTAL {_pts(report.score)}/{_pts(report.graded_max)}{ung}")
    return "\n".join(lines)


def gradescope(report: GradeReport) -> dict:
    """Gradescope's results.json. Tests not graded here carry max_score 0 and say what they are worth."""
    tests, leaderboard, number = [], [], 0
    for i, a in enumerate(report.assignments, 1):
        for j, t in enumerate(a.tests, 1):
            number += 1
            ungraded = t.status == "not_graded"
            out = t.reason or ("passed" if t.status == "passed" else "")
            if ungraded:
                out = f"{t.reason}: worth {_pts(t.max_score)} points where it can run"
            tests.append({
                "name": f"{a.name}: {t.name}", "number": f"{i}.{j}",
                "score": t.score, "max_score": 0.0 if ungraded else t.max_score,
                "output": out, "visibility": "visible",
                "tags": [a.name, t.tier] + (["not_graded"] if ungraded else []),
            })
            if "ratio" in t.extra:
                leaderboard.append({"name": f"{a.name} {t.nodeid.split('::')[-1]}", "value": t.extra["ratio"],
                                    "order": "desc"})
    summary = [f"{a.name}: {_pts(a.score)}/{_pts(a.graded_max)}" + (f" ({a.error})" if a.error else "")
               for a in report.assignments]
    if report.ungraded_max:
        summary.append(f"{_pts(report.ungraded_max)} points not graded here (no GPU or baseline).")
    summary.append(one_line(report.environment))
    return {"score": report.score, "execution_time": round(report.duration, 1), "output": "\n".join(summary),
            "visibility": "visible", "stdout_visibility": "hidden", "tests": tests, "leaderboard": leaderboard}


def junit(report: GradeReport) -> str:
    root = ET.Element("testsuites", name="autograder")
    for a in report.assignments:
        suite = ET.SubElement(root, "testsuite", name=a.name, tests=str(len(a.tests)),
                              failures=str(sum(t.status == "failed" for t in a.tests)),
                              skipped=str(sum(t.status == "not_graded" for t in a.tests)), time=f"{a.duration:.2f}")
        for t in a.tests:
            case = ET.SubElement(suite, "testcase", classname=a.name, name=t.nodeid.split("::")[-1],
                                 time=f"{t.duration:.3f}")
            ET.SubElement(case, "properties").extend([
                ET.Element("property", name="points", value=_pts(t.max_score)),
                ET.Element("property", name="score", value=_pts(t.score)),
                ET.Element("property", name="tier", value=t.tier)])
            if t.status == "failed":
                ET.SubElement(case, "failure", message=t.reason or "failed")
            elif t.status == "not_graded":
                ET.SubElement(case, "skipped", message=t.reason)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


def markdown(report: GradeReport) -> str:
    lines = ["## Autograder", "", f"`{report.impl}` on {one_line(report.environment)}", "",
             "| assignment | score | graded max | not graded here |", "|---|---:|---:|---:|"]
    for a in report.assignments:
        lines.append(f"| {a.name} | {_pts(a.score)} | {_pts(a.graded_max)} | {_pts(a.ungraded_max)} |")
    lines.append(f"| **total** | **{_pts(report.score)}** | {_pts(report.graded_max)} | {_pts(report.ungraded_max)} |")
    for a in report.assignments:
        bad = [t for t in a.tests if t.status != "passed"]
        if a.error or bad:
            lines += ["", f"<details><summary>{a.name}: {len(bad)} not passed</summary>", ""]
            if a.error:
                lines.append(f"- **suite:** {a.error}")
            for t in bad:
                lines.append(f"- `{t.nodeid.split('::')[-1]}` ({_pts(t.max_score)} pts, {STATUS[t.status]}): "
                             f"{t.reason}")
            lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def write_all(report: GradeReport, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "results.json": json.dumps(gradescope(report), indent=2),
        "grade.json": json.dumps(report.to_dict(), indent=2),
        "junit.xml": junit(report),
        "summary.md": markdown(report),
        "summary.txt": terminal(report),
    }
    paths = []
    for name, text in files.items():
        p = out_dir / name
        p.write_text(text)
        paths.append(p)
    return paths
