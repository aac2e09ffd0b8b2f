"""FreeKVCacheBlockQueue: order, O(1) removal from anywhere, links cleared."""
import pytest


def ids(q):
    return [b.block_id for b in q.get_all_free_blocks()]


@pytest.mark.points(2)
def test_queue_order_remove_append(bm):
    """popleft takes the front; remove works at head, middle and tail; append goes to the back."""
    blocks = [bm.block.KVCacheBlock(i) for i in range(6)]
    q = bm.block.FreeKVCacheBlockQueue(blocks)
    assert len(q) == 6 and ids(q) == [0, 1, 2, 3, 4, 5], \
        f"a new queue of blocks 0-5: ids {ids(q)}, len {len(q)}; expected them in the order given"
    first = q.popleft().block_id
    assert first == 0 and ids(q) == [1, 2, 3, 4, 5] and len(q) == 5, \
        f"popleft() gave block {first}, queue now {ids(q)} (len {len(q)}): " \
        "expected block 0 from the front, [1, 2, 3, 4, 5] left"
    q.remove(blocks[3])
    assert ids(q) == [1, 2, 4, 5] and len(q) == 4, "remove from the middle"
    q.remove(blocks[5])
    q.remove(blocks[1])
    assert ids(q) == [2, 4] and len(q) == 2, "remove the tail, then the head"
    for b in (blocks[0], blocks[5], blocks[3]):
        assert b.prev_free_block is None and b.next_free_block is None, \
            f"block {b.block_id} left the queue but keeps its links"
    q.append(blocks[5])
    q.append(blocks[0])
    assert ids(q) == [2, 4, 5, 0] and len(q) == 4, \
        f"append(5), append(0) to [2, 4]: queue {ids(q)}, expected [2, 4, 5, 0]"
    got = [q.popleft().block_id for _ in range(4)]
    assert got == [2, 4, 5, 0] and len(q) == 0, \
        f"popleft() four times gave {got} (len left {len(q)}), expected [2, 4, 5, 0] and 0"
    with pytest.raises(ValueError):
        q.popleft()
    q.append(blocks[1])
    assert ids(q) == [1] and q.popleft() is blocks[1], "append into an empty queue"
