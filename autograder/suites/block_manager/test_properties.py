"""Random operation sequences (hypothesis) against invariants, with a model of the KV memory.

Every slot the manager hands out is "written" with the token it was given for (after applying
pending copy-on-write copies), and after every step every sequence must read its own tokens
back through its block table. This catches a wrong slot, a block written by two owners, a
missed copy, a prefix hit on the wrong content, and a stale cached block, whatever the cause.
"""
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import core as _hypothesis_core
from hypothesis import strategies as st
from hypothesis.internal.conjecture import engine as _hypothesis_engine
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from autograder.checks import run_seed, seed_for_test
from autograder.impl import load
from autograder.remote.client import SubmissionError, WorkerError, call_each, gather
from llmsys import cdiv

BS = 4
NUM_BLOCKS = 12
# Each program is some hundreds of round trips to the submission's worker: a failing one is shrunk
# for 20 s at most (hypothesis allows 300 s, which would meet the test's time limit); the smallest
# program found by then is reported.
_hypothesis_engine.MAX_SHRINKING_SECONDS = 20


class ManagerMachine(RuleBasedStateMachine):
    @initialize(caching=st.booleans())
    def setup(self, caching):
        mod = load("block_manager", "kv_cache_manager")
        self.m = mod.KVCacheManager(NUM_BLOCKS, BS, enable_prefix_caching=caching, watermark=0)
        # the pool's blocks are made once, with their ids: read them once (each read is a round trip)
        self.blocks = self.m.pool.blocks
        self.block_ids = gather(self.blocks, "block_id")
        assert sorted(self.block_ids) == list(range(NUM_BLOCKS)), (
            f"KVCacheManager({NUM_BLOCKS}, ...).pool.blocks has block ids {sorted(self.block_ids)}: expected the "
            f"pool's {NUM_BLOCKS} blocks, ids 0..{NUM_BLOCKS - 1}")
        self.memory: dict[int, int] = {}     # slot -> token written there
        self.tokens: dict[str, list[int]] = {}
        self.next_id = 0

    def _write(self, seq, start, slots):
        for src, dst in self.m.take_copies():
            for off in range(BS):
                if src * BS + off in self.memory:
                    self.memory[dst * BS + off] = self.memory[src * BS + off]
        toks = self.tokens[seq]
        assert len(slots) == len(toks) - start, f"{len(slots)} slots for {len(toks) - start} new tokens"
        table = self.m.get_block_table(seq)
        refs = dict(zip(self.block_ids, gather(self.blocks, "ref_cnt")))
        for i, s in enumerate(slots, start):
            assert s == table[i // BS] * BS + i % BS, f"slot {s} for token {i} does not follow the block table {table}"
            assert refs[s // BS] == 1, \
                f"slot {s} is in block {s // BS} shared by {refs[s // BS]} sequences: writing it corrupts the others"
            self.memory[s] = toks[i]

    @rule(length=st.integers(1, 14), alphabet=st.integers(1, 3))
    def admit(self, length, alphabet):
        seq = f"s{self.next_id}"
        self.next_id += 1
        toks = [(i * 7) % (alphabet + 1) for i in range(length)]  # small alphabets make prefix hits
        self.tokens[seq] = toks
        alloc = self.m.allocate(seq, toks)
        if alloc is None:
            del self.tokens[seq]
            # blocks free by the tables (checked against the memory model), not by the manager's word
            free = NUM_BLOCKS - len({b for table in self._tables().values() for b in table})
            assert cdiv(length, BS) > free, (
                f"allocate refused a prompt of {length} tokens ({cdiv(length, BS)} blocks at most, prefix hits "
                f"or not) although {free} of the {NUM_BLOCKS} blocks are free (no watermark here)")
            return
        assert alloc.num_computed_tokens % BS == 0 and alloc.num_computed_tokens < length, (
            f"a prompt of {length} tokens was admitted with num_computed_tokens={alloc.num_computed_tokens}: "
            f"a prefix hit covers whole blocks only (a multiple of {BS}), and the last prompt token is always computed")
        self._write(seq, alloc.num_computed_tokens, alloc.slot_mapping)

    @precondition(lambda self: self.tokens)
    @rule(data=st.data(), n=st.integers(1, 6), tok=st.integers(0, 3))
    def append(self, data, n, tok):
        seq = data.draw(st.sampled_from(sorted(self.tokens)))
        start = len(self.tokens[seq])
        table = self.m.get_block_table(seq)
        cow = int(start % BS != 0 and self.blocks[table[-1]].ref_cnt > 1)
        need = cdiv(start + n, BS) - len(table) + cow
        free = self.m.get_num_free_blocks()
        slots = self.m.append_slots(seq, [tok] * n)
        if slots is None:
            assert self.m.num_tokens(seq) == start, "a refused append_slots must change nothing"
            assert need > free, f"append_slots refused {n} tokens although {free} free blocks cover the {need} needed"
            return
        self.tokens[seq] += [tok] * n
        self._write(seq, start, slots)

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def fork(self, data):
        parent = data.draw(st.sampled_from(sorted(self.tokens)))
        child = f"s{self.next_id}"
        self.next_id += 1
        self.m.fork(parent, child)
        self.tokens[child] = list(self.tokens[parent])

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def free(self, data):
        seq = data.draw(st.sampled_from(sorted(self.tokens)))
        self.m.free(seq)
        del self.tokens[seq]

    def _tables(self) -> dict[str, list[int]]:
        """Every live sequence's block table, in one request (the invariants run after every step)."""
        seqs = sorted(self.tokens)
        return dict(zip(seqs, call_each(self.m, "get_block_table", [(s,) for s in seqs])))

    @invariant()
    def pool_accounting(self):
        if not hasattr(self, "m"):
            return
        refs = {}
        for table in self._tables().values():
            for b in table:
                refs[b] = refs.get(b, 0) + 1
        counts, ids = gather(self.blocks, "ref_cnt"), self.block_ids
        for cnt, bid in zip(counts, ids):
            assert cnt == refs.get(bid, 0), f"block {bid}: ref_cnt {cnt}, used by {refs.get(bid, 0)} sequences"
        in_use = sum(1 for cnt in counts if cnt > 0)
        assert self.m.get_num_free_blocks() + in_use == NUM_BLOCKS, "free + used != total"

    @invariant()
    def every_sequence_reads_its_own_tokens(self):
        if not hasattr(self, "m"):
            return
        tables = self._tables()
        for seq, toks in self.tokens.items():
            table = tables[seq]
            assert len(table) == cdiv(len(toks), BS), f"{seq}: {len(toks)} tokens in {len(table)} blocks"
            got = [self.memory.get(table[i // BS] * BS + i % BS) for i in range(len(toks))]
            assert got == toks, f"{seq} reads back {got}, wrote {toks} (block table {table})"

    def teardown(self):
        if hasattr(self, "m"):
            for seq in list(self.tokens):
                self.m.free(seq)
            assert self.m.get_num_free_blocks() == NUM_BLOCKS, "freeing every sequence must return the pool to full"


@pytest.mark.points(4)
def test_random_operation_sequences(bm):
    """200 random programs of admit / append / fork / free keep every invariant."""
    bm.kv_cache_manager  # import errors surface here, with the file and line
    machine = ManagerMachine
    machine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None, derandomize=False,
                                         suppress_health_check=list(HealthCheck), database=None)
    # hypothesis draws its programs from the grading run's seed: new ones every run, the same
    # ones with `grade --seed N` (a failure found once is found again on replay)
    seed = seed_for_test("hypothesis")
    print(f"hypothesis seed: {seed} (run seed {run_seed()})")
    _hypothesis_core.global_force_seed = seed
    try:
        machine.TestCase().runTest()
    except Exception as e:  # noqa: BLE001 - the reason names the program that fails
        raise _with_program(e) from None
    finally:
        _hypothesis_core.global_force_seed = None


_INVARIANTS = ("pool_accounting", "every_sequence_reads_its_own_tokens")


def program(notes: list[str]) -> str:
    """Hypothesis's minimal failing program (the exception's notes) on one line: the steps in order,
    each rule with the values it drew, without the invariant checks run after every step."""
    steps, draws = [], []
    for line in notes:
        line = line.strip()
        if line.startswith("Explanation:"):
            break
        if line.startswith("Draw "):  # "Draw 1: 's0'  # or any other generated value"
            draws.append(line.split(":", 1)[1].split("  #")[0].strip())
        elif line.startswith("state.") and not any(line.startswith(f"state.{i}(") for i in _INVARIANTS):
            step = line.removeprefix("state.")
            if draws:
                step = step.replace("data=data(...)", "draws " + ", ".join(draws))
                draws = []
            steps.append(step)
    return "; ".join(steps)


def _with_program(e: Exception) -> Exception:
    """The failure to report: the first of hypothesis's distinct failures, its message followed by the
    minimal program that produces it (`grade --seed N -k random` runs the same programs again)."""
    group = list(getattr(e, "exceptions", None) or [])
    first = group[0] if group else e
    more = f" (and {len(group) - 1} other distinct failure(s): see the log)" if len(group) > 1 else ""
    steps = program(getattr(first, "__notes__", None) or [])
    if isinstance(first, (NotImplementedError, WorkerError, SubmissionError)) or not steps:
        return first  # a stub, a dead worker, an exit: reported as they are
    what = str(first).splitlines()[0] if str(first).strip() else ""
    if not isinstance(first, AssertionError):
        what = f"the submission raised {type(first).__name__}: {what}"
    return AssertionError(f"{what}; minimal failing program: {steps}{more}")
