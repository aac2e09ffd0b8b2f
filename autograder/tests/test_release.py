"""The release tool: stubs from fenced regions, idempotence, --check, bad markers."""
import textwrap

import pytest

from autograder import REPO_ROOT, config, release


def test_stub_names_assignment_function_and_hint():
    src = textwrap.dedent('''
        class KVCache:
            def append(self, k, v):
                """Docstring stays."""
                # BEGIN SOLUTION hint: write at [length, length + n)
                self.k[0] = k
                return k
                # END SOLUTION
    ''')
    out = release.stub_source(src, "kv_cache", "kv_cache/kv_cache.py")
    assert '"""Docstring stays."""' in out and "self.k[0] = k" not in out
    assert ('raise NotImplementedError("kv_cache: KVCache.append (kv_cache/kv_cache.py): '
            'write at [length, length + n)")') in out
    ns = {}
    exec(compile(out, "x", "exec"), ns)
    with pytest.raises(NotImplementedError, match="KVCache.append"):
        ns["KVCache"]().append(1, 2)


def test_triton_kernel_region_becomes_static_assert():
    src = textwrap.dedent('''
        @triton.jit
        def _kernel(x_ptr, BLOCK: tl.constexpr):
            # BEGIN SOLUTION hint: load, add, store
            tl.store(x_ptr, 1)
            # END SOLUTION
    ''')
    out = release.stub_source(src, "paged_attention", "k.py")
    assert 'tl.static_assert(False, "not implemented: paged_attention: _kernel (k.py): load, add, store")' in out


def _stub_message(out: str, name: str) -> str:
    """The message the stub of function `name` in released source `out` raises."""
    ns = {}
    exec(compile(out, "x", "exec"), ns)
    with pytest.raises(NotImplementedError) as e:
        ns[name]()
    return str(e.value)


def test_long_stub_is_wrapped_to_120_columns_with_the_same_message():
    """A stub that would run past 120 columns: `raise NotImplementedError(` alone, then the message
    as string literals, one a line, each broken after a space; the message is unchanged."""
    hint = ("scores in fp32 = scale * q @ k^T over repeat_kv'd heads; mask with -inf; softmax; NaN rows -> 0; "
            "@ v; a \\ backslash and \"quotes\" survive; " + "word " * 40).strip()
    src = f"def attend():\n    # BEGIN SOLUTION hint: {hint}\n    return 1\n    # END SOLUTION\n"
    out = release.stub_source(src, "kv_cache", "kv_cache/attention.py")
    lines = out.splitlines()
    assert lines[1] == "    raise NotImplementedError(" and all(len(line) <= release.WIDTH for line in lines)
    pieces = lines[2:]
    assert len(pieces) > 2 and all(p.startswith('        "') for p in pieces) and pieces[-1].endswith('")')
    assert all(p.endswith(' "') for p in pieces[:-1]), "each piece but the last ends after a space"
    assert _stub_message(out, "attend") == f"kv_cache: attend (kv_cache/attention.py): {hint}"


def test_word_longer_than_a_line_is_cut_outside_escapes():
    hint = "x" * 105 + '\\"' * 40
    src = f"def f():\n    # BEGIN SOLUTION hint: {hint}\n    pass\n    # END SOLUTION\n"
    out = release.stub_source(src, "a", "f.py")
    assert all(len(line) <= release.WIDTH for line in out.splitlines())
    assert _stub_message(out, "f") == f"a: f (f.py): {hint}"


def test_hint_continues_on_hanging_indent_comment_lines():
    """`#` and at least two spaces, at the BEGIN line's indentation, right after it: the hint goes
    on (joined with a space); the first other line, a one-space comment included, ends it."""
    src = textwrap.dedent('''
        def f():
            # BEGIN SOLUTION hint: first part,
            #   second part;
            #     third part
            # the reference's own comment, not the hint
            x = 1
            #   after code: not the hint either
            return x
            # END SOLUTION
    ''')
    out = release.stub_source(src, "a", "f.py")
    assert _stub_message(out, "f") == "a: f (f.py): first part, second part; third part"
    assert "comment" not in out and "second part" in out and "x = 1" not in out
    # without a hint, a following comment is the reference's
    src = "def f():\n    # BEGIN SOLUTION\n    #   a note\n    pass\n    # END SOLUTION\n"
    out = release.stub_source(src, "a", "f.py")
    assert _stub_message(out, "f") == "a: f (f.py): see the docstring"


def test_long_triton_stub_keeps_the_call_on_its_own_first_line():
    """Triton's CompileTimeAssertionFailure shows the source up to the call's first line: that line
    is `tl.static_assert(` alone, so that the whole message, not a piece, is the first one shown."""
    hint = "q tile [PADDED_GROUP, HEAD_SIZE]; per tile gather block ids, load K/V rows masked, s = dot(q, k^T) * scale"
    src = f"@triton.jit\ndef _k(x_ptr):\n    # BEGIN SOLUTION hint: {hint}\n    pass\n    # END SOLUTION\n"
    out = release.stub_source(src, "paged_attention", "k.py")
    lines = out.splitlines()
    assert lines[2:4] == ["    tl.static_assert(", "        False,"] and all(len(x) <= release.WIDTH for x in lines)
    call = compile(out, "k.py", "exec", flags=__import__("ast").PyCF_ONLY_AST).body[0].body[0].value
    assert call.args[1].value == f"not implemented: paged_attention: _k (k.py): {hint}"


def test_short_reason_gives_a_kernel_stubs_whole_message():
    """The grader's one-line reason for a stub in a kernel, from the interpreter's error and from
    the compiler's (source excerpt, then the message), keeps the hint's own closing parenthesis."""
    from autograder.pytest_plugin import short_reason

    msg = "not implemented: paged_attention: _k (k.py): acc += dot(p, v)"
    assert short_reason(RuntimeError(f"AssertionError({msg!r})")) == msg
    excerpt = f'at 3:4:\ndef _k(x_ptr):\n    tl.static_assert(False, "{msg}")\n    ^\n{msg}'
    assert short_reason(RuntimeError(excerpt)) == msg
    assert short_reason(RuntimeError("at 3:4:\n    tl.static_assert(\n    ^\n" + msg)) == msg


@pytest.mark.parametrize("src,err", [
    ("def f():\n    # BEGIN SOLUTION\n    pass\n", "never closed"),
    ("def f():\n    # END SOLUTION\n", "without BEGIN"),
    ("def f():\n    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n    # END SOLUTION\n", "nested"),
    ("# BEGIN SOLUTION\nx = 1\n# END SOLUTION\n", "inside a function"),
])
def test_bad_markers_are_errors(src, err):
    with pytest.raises(release.ReleaseError, match=err):
        release.stub_source(src, "a", "f.py")


def test_release_is_idempotent_and_in_sync(tmp_path):
    release.release_into(tmp_path / "one")
    release.release_into(tmp_path / "one")  # twice into the same place
    release.release_into(tmp_path / "two")
    assert release._compare(tmp_path / "one", tmp_path / "two", type(tmp_path)(".")) == []
    assert release.check(REPO_ROOT / "assignments") == [], \
        "assignments/ is out of date: run python -m autograder release"


def test_check_reports_edits_and_leftover_markers(tmp_path):
    dest = tmp_path / "assignments"
    release.release_into(dest)
    f = dest / "kv_cache" / "kv_cache.py"
    f.write_text(f.read_text() + "\n# BEGIN SOLUTION\n")
    problems = release.check(dest)
    assert any("out of date" in p for p in problems) and any("marker was left" in p for p in problems)


@pytest.mark.parametrize("assignment", config.assignments())
def test_every_collected_test_is_worth_points(assignment):
    """Every test a suite collects carries a points marker: a helper whose name starts with
    test_ (imported into a test module, say) would otherwise be graded as a 0-point test."""
    from autograder.runner import collect

    unmarked = [t["nodeid"] for t in collect(assignment) if not float(t["points"]) > 0]
    assert not unmarked, f"collected without points (a helper named test_*?): {unmarked}"
