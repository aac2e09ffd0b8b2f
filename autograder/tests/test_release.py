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
