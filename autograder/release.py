"""solutions/ -> assignments/: the one source the student stubs are generated from.

In solutions/, student regions are fenced:

    def append(self, k, v):
        \"\"\"docstring stays\"\"\"
        # BEGIN SOLUTION hint: write the new tokens at [length, length + n) and return views
        ...reference code...
        # END SOLUTION

A hint too long for one line continues on the comment lines directly after the BEGIN line, at
its indentation, each a `#` followed by at least two spaces (a hanging indent); they are joined
to the hint with one space, and are part of the region (the stub drops them with it):

        # BEGIN SOLUTION hint: write the new tokens at [length, length + n), advance length
        #   and return views of the filled part
        ...reference code...
        # END SOLUTION

A comment with a single space after `#` (`# step 1`) is the reference's own and ends the hint.

`python -m autograder release` replaces each region by a stub that raises
NotImplementedError naming the assignment, the function and the hint. Inside a
`@triton.jit` kernel, where Python's raise does not compile, the stub is a
`tl.static_assert(False, ...)` carrying the same message. A stub that would run past
WIDTH (120, the lint's line length) is wrapped: the call's opening on its own line, then the
message as implicitly concatenated string literals, one a line, indented under it and broken
after a space, so that the message is the same text as on one line:

        raise NotImplementedError(
            "kv_cache: KVCache.append (kv_cache/kv_cache.py): write the new tokens at "
            "[length, length + n), advance length and return views of the filled part")

(In a kernel the first line stays `tl.static_assert(` alone, so that the source excerpt of
Triton's CompileTimeAssertionFailure, which ends at the call's first line, does not carry a
piece of the message before the whole one.) Everything outside the fences (docstrings,
signatures, handouts, data) is copied as it is. Releasing twice changes nothing; `--check`
fails when assignments/ is out of date or a marker was left behind.
"""
from __future__ import annotations

import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

from . import REPO_ROOT

SOLUTIONS = REPO_ROOT / "solutions"
ASSIGNMENTS = REPO_ROOT / "assignments"
BEGIN = re.compile(r"^(?P<indent>\s*)# BEGIN SOLUTION(?:\s+hint:\s*(?P<hint>.*?))?\s*$")
HINT_MORE = re.compile(r"^(?P<indent>\s*)#\s{2,}(?P<more>\S.*?)\s*$")  # a hint's continuation line
WIDTH = 120  # [tool.ruff] line-length: the stubs pass the same lint as the reference
END = re.compile(r"^\s*# END SOLUTION\s*$")
DEF = re.compile(r"^(?P<indent>\s*)(?:async\s+)?def\s+(?P<name>\w+)")
CLASS = re.compile(r"^(?P<indent>\s*)class\s+(?P<name>\w+)")
MARKERS = ("BEGIN SOLUTION", "END SOLUTION")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")


class ReleaseError(Exception):
    pass


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _enclosing(lines: list[str], i: int, indent: int) -> tuple[str, bool]:
    """Qualified name of the function around line i, and whether it is a @triton.jit kernel."""
    name, jit, fn_indent = None, False, None
    for j in range(i - 1, -1, -1):
        line = lines[j]
        if not line.strip():
            continue
        if name is None:
            m = DEF.match(line)
            if m and len(m.group("indent")) < indent:
                name, fn_indent = m.group("name"), len(m.group("indent"))
                k = j - 1
                while k >= 0 and lines[k].strip().startswith("@"):
                    jit = jit or "triton.jit" in lines[k] or lines[k].strip() == "@jit"
                    k -= 1
        else:
            m = CLASS.match(line)
            if m and len(m.group("indent")) < fn_indent:
                return f"{m.group('name')}.{name}", jit
            if _indent(line) == 0 and not line.startswith(("#", "@")):
                break
    if name is None:
        raise ReleaseError(f"line {i + 1}: a solution region must sit inside a function")
    return name, jit


def _call(indent: str, opening: str, first_arg: str, msg: str) -> str:
    """`{opening}{first_arg}"{msg}")` (msg already escaped) as source lines of at most WIDTH
    columns: one line where it fits, else the opening alone, then first_arg alone, then msg as
    string literals, one a line, indented 4 under the opening, each piece ending after a space."""
    one = f'{indent}{opening}{first_arg}"{msg}")\n'
    if len(one) - 1 <= WIDTH:
        return one
    inner = indent + " " * 4
    room = WIDTH - len(inner) - 2  # the two quotes
    pieces, rest = [], msg
    while len(rest) > room - 1:  # the last piece also carries the closing parenthesis
        cut = rest.rfind(" ", 0, min(room, len(rest) - 1)) + 1  # after a space, leaving something
        if cut <= 0:  # one word longer than a line: cut it, but not inside an escape (\\ or \")
            cut = room
            while (len(rest[:cut]) - len(rest[:cut].rstrip("\\"))) % 2:
                cut -= 1
        pieces.append(rest[:cut])
        rest = rest[cut:]
    pieces.append(rest)
    lines = [f"{indent}{opening}"] + ([inner + first_arg.rstrip()] if first_arg else [])
    lines += [f'{inner}"{p}"' for p in pieces]
    return "\n".join(lines) + ")\n"


def stub_source(text: str, assignment: str, filename: str) -> str:
    lines = text.splitlines(keepends=True)
    out, i = [], 0
    while i < len(lines):
        m = BEGIN.match(lines[i].rstrip("\n"))
        if not m:
            if END.match(lines[i].rstrip("\n")):
                raise ReleaseError(f"{filename}:{i + 1}: END SOLUTION without BEGIN SOLUTION")
            out.append(lines[i])
            i += 1
            continue
        start, indent = i, m.group("indent")
        j = i + 1
        while j < len(lines) and not END.match(lines[j].rstrip("\n")):
            if BEGIN.match(lines[j].rstrip("\n")):
                raise ReleaseError(f"{filename}:{j + 1}: nested BEGIN SOLUTION (region opened at line {start + 1})")
            j += 1
        if j == len(lines):
            raise ReleaseError(f"{filename}:{start + 1}: BEGIN SOLUTION is never closed by END SOLUTION")
        qual, jit = _enclosing(lines, start, len(indent))
        hint = (m.group("hint") or "").strip()
        k = start + 1
        while hint and k < j and (more := HINT_MORE.match(lines[k].rstrip("\n"))) and more.group("indent") == indent:
            hint += " " + more.group("more")
            k += 1
        msg = f"{assignment}: {qual} ({filename}): {hint or 'see the docstring'}"
        msg = msg.replace("\\", "\\\\").replace('"', '\\"')
        if jit:
            out.append(_call(indent, "tl.static_assert(", "False, ", f"not implemented: {msg}"))
        else:
            out.append(_call(indent, "raise NotImplementedError(", "", msg))
        i = j + 1
    return "".join(out)


NOTEBOOKS = "notebooks"  # solutions/notebooks: nbgrader sources, released by autograder/notebooks.py


TABLE_MARKER = "<!-- grading table: written by `python -m autograder release` from the suites -->"


def grading_table(assignment: str) -> str:
    """The handout's table of graded tests, from the suite's own collection (points, tier and the
    first line of each test's docstring), so that a handout cannot drift from what is graded."""
    import ast

    from . import SUITES_DIR
    from .runner import collect

    docs: dict[tuple[str, str], str] = {}

    def doc_of(path: str, func: str) -> str:  # the docstring's first paragraph, read without importing
        if (path, func) not in docs:
            tree = ast.parse((SUITES_DIR / path).read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef):
                    text = ast.get_docstring(node) or ""
                    docs[(path, node.name)] = " ".join(text.split("\n\n")[0].split())
        return docs.get((path, func), "")

    rows: dict[str, dict] = {}
    for t in collect(assignment):
        path, _, func = t["nodeid"].partition("::")
        base = func.split("[")[0]
        r = rows.setdefault(base, dict(n=0, points=0.0, tier=t["tier"], doc=doc_of(path, base)))
        r["n"] += 1
        r["points"] += float(t["points"])
    total = sum(r["points"] for r in rows.values())
    lines = [TABLE_MARKER, "", "| test | cases | points | tier | what it checks |", "|---|---:|---:|---|---|"]
    for base, r in rows.items():
        doc = r["doc"].replace("|", chr(92) + "|")
        lines.append(f"| `{base}` | {r['n']} | {r['points']:g} | {r['tier']} | {doc} |")
    lines.append(f"| **total** | {sum(r['n'] for r in rows.values())} | **{total:g}** | | |")
    return "\n".join(lines)


def release_into(dest: Path) -> list[Path]:
    """Write the student tree for every assignment in solutions/ into dest; returns the files written."""
    written = []
    for src_dir in sorted(p for p in SOLUTIONS.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))
                          and p.name != NOTEBOOKS):
        out_dir = dest / src_dir.name
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.copytree(src_dir, out_dir, ignore=IGNORE)
        for py in sorted(out_dir.rglob("*.py")):
            rel = py.relative_to(dest)
            py.write_text(stub_source(py.read_text(), src_dir.name, str(rel)))
            written.append(py)
        readme = out_dir / "README.md"
        if readme.is_file() and TABLE_MARKER in readme.read_text():
            readme.write_text(readme.read_text().replace(TABLE_MARKER, grading_table(src_dir.name)))
    return written


def check(dest: Path = ASSIGNMENTS) -> list[str]:
    """Problems that make assignments/ differ from a fresh release of solutions/."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        release_into(fresh)
        problems += _compare(fresh, dest, Path("."))
    for f in dest.rglob("*"):
        if f.is_file() and f.suffix in (".py", ".md", ".ipynb", ".txt") and "__pycache__" not in f.parts:
            text = f.read_text(errors="replace")
            for marker in MARKERS:
                if f"# {marker}" in text:
                    problems.append(f"{f.relative_to(dest.parent)}: a '{marker}' marker was left behind")
    return problems


def _compare(a: Path, b: Path, rel: Path) -> list[str]:
    problems = []
    # assignments/notebooks is nbgrader's output, checked by _notebooks()
    ignore = ["__pycache__", ".ipynb_checkpoints"] + ([NOTEBOOKS] if rel == Path(".") else [])
    cmp = filecmp.dircmp(a / rel, b / rel, ignore=ignore)
    problems += [f"assignments/{rel / n}: missing (run `python -m autograder release`)" for n in cmp.left_only]
    problems += [f"assignments/{rel / n}: not in solutions/ (stale?)" for n in cmp.right_only]
    _, mismatch, errors = filecmp.cmpfiles(a / rel, b / rel, cmp.common_files, shallow=False)
    problems += [f"assignments/{rel / n}: out of date with solutions/" for n in mismatch + errors]
    for d in cmp.common_dirs:
        problems += _compare(a, b, rel / d)
    return problems


def _notebooks(check_only: bool) -> list[str]:
    """The tutorial notebooks go through nbgrader generate_assignment (autograder/notebooks.py).
    Without nbgrader they are left alone, and said so."""
    try:
        import nbgrader  # noqa: F401
    except ImportError:
        print("notebooks: nbgrader is not installed (pip install -e '.[notebooks]'): assignments/notebooks/ "
              "was not regenerated or checked", file=sys.stderr)
        return []
    from . import notebooks

    if check_only:
        return [f"{p}: differs from nbgrader generate_assignment of solutions/notebooks/"
                for p in notebooks.release(check=True)]
    notebooks.release()
    print(f"released the notebooks of {', '.join(notebooks.assignments())} into assignments/notebooks/ (nbgrader)")
    return []


def main(check_only: bool = False) -> int:
    """`python -m autograder release` (check_only: `release --check`). The parameter is not named
    `check`, which would hide the function check() in here."""
    try:
        if check_only:
            problems = check() + _notebooks(check_only=True)
            for p in problems:
                print(p, file=sys.stderr)
            print("release --check: " + ("OK, assignments/ matches solutions/" if not problems
                                         else f"{len(problems)} problem(s); run `python -m autograder release`"))
            return 1 if problems else 0
        ASSIGNMENTS.mkdir(exist_ok=True)
        files = release_into(ASSIGNMENTS)
        print(f"released {len(files)} Python files into {ASSIGNMENTS.relative_to(REPO_ROOT)}/")
        _notebooks(check_only=False)
        return 0
    except ReleaseError as e:
        print(f"release failed: {e}", file=sys.stderr)
        return 1
