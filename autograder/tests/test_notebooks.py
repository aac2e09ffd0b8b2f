"""The tutorial notebooks under nbgrader, headless: the released copies are what
`nbgrader generate_assignment` makes of the sources; `nbgrader autograde` gives the sources
(with solutions) full marks and the released copies zero."""
import pytest

from autograder import notebooks


def test_release_in_sync():
    assert notebooks.release(check=True) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vllm", "deepspeed"])
def test_autograde_solution_full_and_release_zero(name):
    assert name in notebooks.assignments()
    solved = notebooks.grade(notebooks.SOURCE / name, name)
    assert solved["max_score"] >= 10 and solved["score"] == solved["max_score"], solved
    assert len(solved["notebooks"]) == 4, "sections 1-4"
    released = notebooks.grade(notebooks.RELEASE / name, name)
    assert released["score"] == 0 and released["max_score"] == solved["max_score"], released


@pytest.mark.slow
def test_a_wrong_answer_is_told_which_hidden_test_failed(tmp_path):
    """waste() returning the used share instead of the wasted one loses test_waste's 2 points, and
    the report names the test and the assertion it failed."""
    import json
    import shutil

    for nb in (notebooks.SOURCE / "vllm").glob("*.ipynb"):
        shutil.copy(nb, tmp_path / nb.name)
    path = tmp_path / "2_paged_attention.ipynb"
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "waste":
            cell["source"] = [ln.replace("return 1 - sum(lengths)", "return sum(lengths)") for ln in cell["source"]]
    path.write_text(json.dumps(nb))
    r = notebooks.grade(tmp_path, "vllm")
    assert r["notebooks"]["2_paged_attention"][0] == r["notebooks"]["2_paged_attention"][1] - 2, r
    assert any("test_waste" in f and "waste(" in f for f in r["failures"]), r["failures"]
