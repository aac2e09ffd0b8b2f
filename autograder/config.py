"""Reads autograder/grading.toml: the instructor-editable numbers, and nothing else."""
from __future__ import annotations

import functools
import math
import tomllib
from dataclasses import dataclass

from . import PACKAGE_DIR, SUITES_DIR


@functools.cache
def load() -> dict:
    with open(PACKAGE_DIR / "grading.toml", "rb") as f:
        return tomllib.load(f)


def limits() -> dict:
    return load()["limits"]


def assignments() -> list[str]:
    """Assignment names that have a graded suite, in course order."""
    table = load()["assignments"]
    names = [n for n in table if (SUITES_DIR / n).is_dir()]
    return sorted(names, key=lambda n: table[n].get("order", 99))


def builds_on(name: str) -> list[str]:
    """The earlier assignments whose code this one imports (grading.toml builds_on)."""
    return list(load()["assignments"].get(name, {}).get("builds_on", []))


def cases(name: str) -> dict:
    """The cases an assignment's speed tests time ([assignments.<name>.cases] in grading.toml)."""
    try:
        return load()["assignments"][name]["cases"]
    except KeyError:
        raise KeyError(f"autograder/grading.toml has no [assignments.{name}.cases]") from None


def title(name: str) -> str:
    return load()["assignments"].get(name, {}).get("title", name)


@dataclass(frozen=True)
class SpeedScale:
    full: float
    zero: float
    review: float | None = None  # flag ratios above this for a human; None: [speed] review

    def fraction(self, ratio: float) -> float:
        """Share of the points for a speed ratio (baseline_time / student_time)."""
        if math.isnan(ratio) or ratio <= 0:  # NaN or nonsense never scores
            return 0.0
        if ratio >= self.full:
            return 1.0
        if ratio <= self.zero:
            return 0.0
        return (ratio - self.zero) / (self.full - self.zero)


def speed_scale(assignment: str, key: str) -> SpeedScale:
    try:
        entry = load()["assignments"][assignment]["speed"][key]
    except KeyError:
        raise KeyError(f"autograder/grading.toml has no [assignments.{assignment}.speed] "
                       f"{key} = {{full=..., zero=...}}")
    review = entry.get("review")
    return SpeedScale(full=float(entry["full"]), zero=float(entry["zero"]),
                      review=None if review is None else float(review))


def review_ratio(assignment: str | None = None, key: str | None = None) -> float:
    """Ratios above this are flagged for review: the speed entry's own `review`, else [speed] review."""
    if assignment is not None and key is not None:
        own = speed_scale(assignment, key).review
        if own is not None:
            return own
    return float(load()["speed"]["review"])


def inprocess_tiers(assignment: str) -> set[str]:
    """Tiers whose submission code still runs inside the test process ([isolation] in grading.toml)."""
    iso = load().get("isolation", {})
    if assignment in iso.get("inprocess_assignments", []):
        return {"correctness", "gpu", "speed"}
    return set(iso.get("inprocess_tiers", []))
