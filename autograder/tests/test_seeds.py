"""The grading run's seed: the same seed gives every test the same inputs (a failure can be
replayed with `grade --seed N`), another seed or another test other inputs."""
import subprocess
import sys

from autograder import checks


def _seeds(run: str, test: str, n: int = 3) -> list[int]:
    code = ("import os, sys; from autograder import checks; checks.begin_test(sys.argv[2]); "
            "print([checks.seed_for_test('rng') for _ in range(int(sys.argv[3]))])")
    out = subprocess.run([sys.executable, "-c", code, run, test, str(n)], capture_output=True, text=True, check=True,
                         env={"AUTOGRADER_SEED": run, "PATH": "/usr/bin:/bin"})
    return eval(out.stdout)  # noqa: S307 - our own print of a list of ints


def test_same_run_seed_same_inputs_in_a_new_process():
    a, b = _seeds("1234", "suite::test_a"), _seeds("1234", "suite::test_a")
    assert a == b and len(set(a)) == 3, (a, b)


def test_other_seed_or_other_test_other_inputs():
    a = _seeds("1234", "suite::test_a")
    assert _seeds("1235", "suite::test_a") != a
    assert _seeds("1234", "suite::test_b") != a


def test_without_a_run_seed_each_process_draws_its_own(monkeypatch):
    monkeypatch.delenv(checks.SEED_ENV, raising=False)
    monkeypatch.setattr(checks, "_fallback_seed", None)
    first = checks.run_seed()
    assert checks.run_seed() == first
