"""What grading produces: one TestResult per graded test, grouped per assignment."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class TestResult:
    __test__ = False  # not a pytest test class
    assignment: str
    nodeid: str
    name: str
    tier: str                 # correctness | gpu | speed
    max_score: float
    status: str = "failed"    # passed | failed | not_graded
    score: float = 0.0
    reason: str = ""
    duration: float = 0.0
    extra: dict = field(default_factory=dict)


@dataclass
class AssignmentResult:
    name: str
    title: str
    tests: list[TestResult] = field(default_factory=list)
    error: str = ""           # a suite-level problem (crash, time-out), also reflected in tests
    notes: list[str] = field(default_factory=list)  # what the grader cleaned up (restarts, leftovers)
    duration: float = 0.0
    restarts: int = 0
    # where submission code ran, per tier: "worker: bubblewrap" (graded outside its reach) or
    # "in-process: legacy guards" (graded in the process that ran it; docs/grading.md)
    isolation: dict = field(default_factory=dict)

    @property
    def score(self) -> float:
        return round(sum(t.score for t in self.tests), 4)

    @property
    def graded_max(self) -> float:
        return sum(t.max_score for t in self.tests if t.status != "not_graded")

    @property
    def ungraded_max(self) -> float:
        return sum(t.max_score for t in self.tests if t.status == "not_graded")


@dataclass
class GradeReport:
    impl: str
    assignments: list[AssignmentResult]
    environment: dict
    duration: float = 0.0
    error: str = ""          # the submission could not be graded at all (missing, too large, a bad zip)
    seed: int | None = None  # the run's seed: `grade --seed N` gives the tests the same inputs

    @property
    def score(self) -> float:
        return round(sum(a.score for a in self.assignments), 4)

    @property
    def graded_max(self) -> float:
        return sum(a.graded_max for a in self.assignments)

    @property
    def ungraded_max(self) -> float:
        return sum(a.ungraded_max for a in self.assignments)

    def to_dict(self) -> dict:
        return {"impl": self.impl, "environment": self.environment, "duration": self.duration, "error": self.error,
                "seed": self.seed,
                "assignments": [asdict(a) for a in self.assignments]}
