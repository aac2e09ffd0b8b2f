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
