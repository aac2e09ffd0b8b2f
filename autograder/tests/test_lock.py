"""requirements.lock (what `make setup` installs with) pins every dependency pyproject.toml names,
at a version pyproject allows: a dependency added or moved without `make lock` fails here."""
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from autograder import REPO_ROOT

SETUP_EXTRAS = ("deepspeed", "notebooks")  # the Makefile's EXTRAS


def test_the_lock_pins_every_dependency_within_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for e in SETUP_EXTRAS for r in project["optional-dependencies"][e]]
    pins = {}
    for line in (REPO_ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"requirements.lock: {line!r} is not an exact pin"
            pins[canonicalize_name(req.name)] = spec.version
    for req in wanted:
        version = pins.get(canonicalize_name(req.name))
        assert version is not None, f"{req.name} is in pyproject.toml but not in requirements.lock: run make lock"
        assert req.specifier.contains(version, prereleases=True), \
            f"requirements.lock pins {req.name}=={version}, outside pyproject.toml's {req}: run make lock"
