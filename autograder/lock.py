"""Write requirements.lock from the environment this runs in (`make lock` runs it in .venv).

Pinned: what pyproject.toml pulls in with the extras given (those of `make setup`), followed through
the installed packages' own requirements, plus torch and triton; at the installed versions, less
local labels (2.13.0+cpu is pinned as 2.13.0, which the CPU wheel and the CUDA one both satisfy).
Not pinned: this package itself, and anything installed by hand that nothing requires. A version
that needs a newer Python than some the course supports carries a marker, so that pip leaves that
package free there instead of failing.

    python -m autograder.lock [--extras deepspeed,notebooks] > requirements.lock
"""
from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

PROJECT = "llmsys-course"
ALSO = ("torch", "triton")  # installed by the Makefile before the project (TORCH_SPEC, TRITON_SPEC)
PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")  # requires-python >= 3.10

HEADER = """\
# The exact versions `make setup` installs: pip install -c requirements.lock (torch and triton
# through TORCH_SPEC and TRITON_SPEC, whose defaults are the versions here). Regenerate with
# `make lock` (python -m autograder.lock in .venv): after changing a dependency, `make setup LOCK=`
# in a fresh .venv, `make test`, then `make lock`, and commit this file with the change.
# Why a lock: grading compares the course's fp32 results with transformers' (greedy tokens, logits
# within fp32 tolerances), so a new transformers or torch can move a grade; and the Triton 3.6
# interpreter, which runs the paged-attention kernels on the CPU, breaks on numpy >= 2.4.
# Written on Python {python}; a pin marked with a Python version is left to pip elsewhere.
"""


def closure(extras: set[str]) -> dict[str, tuple[str, str]]:
    """{canonical name: (name, version)} of everything the project and ALSO require, as installed."""
    seen: dict[str, set[str]] = {}
    todo = [(PROJECT, extras)] + [(n, set()) for n in ALSO]
    while todo:
        name, want = todo.pop()
        key = canonicalize_name(name)
        if key in seen and want <= seen[key]:
            continue
        seen[key] = seen.get(key, set()) | want
        try:
            dist = distribution(name)
        except PackageNotFoundError:  # required only under a marker that holds here, or not installed
            print(f"note: {name} is required but not installed: not pinned", file=sys.stderr)
            seen.pop(key)
            continue
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in seen[key] | {""}):
                todo.append((req.name, set(req.extras)))
    out = {}
    for key in seen:
        if key != canonicalize_name(PROJECT):
            dist = distribution(key)
            out[key] = (dist.metadata["Name"], dist.version.split("+")[0])
    return out


def marker(name: str) -> str:
    """' ; python_full_version ...' where the installed version's Requires-Python leaves out a
    Python the course supports, else ''."""
    rp = distribution(name).metadata.get("Requires-Python")
    if not rp:
        return ""
    spec = SpecifierSet(rp)
    if all(spec.contains(v) for v in PYTHONS):
        return ""
    return " ; " + " and ".join(f'python_full_version {s.operator} "{s.version}"' for s in sorted(spec, key=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--extras", default="deepspeed,notebooks", help="the project's extras (make setup's EXTRAS)")
    args = ap.parse_args()
    pins = closure({e for e in args.extras.split(",") if e})
    python = ".".join(map(str, sys.version_info[:3]))
    sys.stdout.write(HEADER.format(python=python))
    for key in sorted(pins):
        name, version = pins[key]
        sys.stdout.write(f"{name}=={version}{marker(name)}\n")


if __name__ == "__main__":
    main()
