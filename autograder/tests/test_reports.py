"""The four outputs agree and have the shapes their consumers expect."""
import json
import xml.etree.ElementTree as ET

from autograder import report
from autograder.results import AssignmentResult, GradeReport, TestResult


def sample_report():
    a = AssignmentResult("kv_cache", "KV caching", tests=[
        TestResult("kv_cache", "kv_cache/test_a.py::test_ok", "test_ok: fine", "correctness", 2, "passed", 2, ""),
        TestResult("kv_cache", "kv_cache/test_a.py::test_bad", "test_bad", "correctness", 3, "failed", 0,
                   "AssertionError: x"),
        TestResult("kv_cache", "kv_cache/test_g.py::test_speed", "test_speed", "speed", 4, "not_graded", 0,
                   "not graded here (no GPU)"),
        TestResult("kv_cache", "kv_cache/test_g.py::test_fast", "test_fast", "speed", 2, "passed", 1.5, "0.9x",
                   extra={"ratio": 0.9}),
    ], error="")
    return GradeReport("solutions", [a], {"python": "3.11", "gpu": None, "torch": "2.13"}, 1.0)


def test_gradescope_results_json_shape():
    r = sample_report()
    d = report.gradescope(r)
    json.dumps(d)
    assert d["score"] == 3.5 and isinstance(d["execution_time"], float) and isinstance(d["output"], str)
    assert len(d["tests"]) == 4
    for t in d["tests"]:
        assert set(t) >= {"name", "number", "score", "max_score", "output", "visibility", "tags"}
        assert t["score"] <= t["max_score"] or t["max_score"] == 0
    ung = [t for t in d["tests"] if "not_graded" in t["tags"]]
    assert ung and ung[0]["max_score"] == 0 and "worth 4 points" in ung[0]["output"]
    assert d["leaderboard"] == [{"name": "kv_cache test_fast", "value": 0.9, "order": "desc"}]
    assert (r.score, r.graded_max, r.ungraded_max) == (3.5, 7, 4)


def test_junit_markdown_terminal(tmp_path):
    r = sample_report()
    root = ET.fromstring(report.junit(r))
    suite = root.find("testsuite")
    assert suite.get("failures") == "1" and suite.get("skipped") == "1" and suite.get("tests") == "4"
    md = report.markdown(r)
    assert "| kv_cache | 3.5 | 7 | 4 |" in md and "test_bad" in md
    term = report.terminal(r)
    assert "TOTAL 3.5/7" in term and "4 points not graded here" in term
    paths = report.write_all(r, tmp_path / "out")
    assert {p.name for p in paths} == {"results.json", "grade.json", "junit.xml", "summary.md", "summary.txt"}
