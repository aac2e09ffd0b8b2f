"""Flat padded shards: sizes, boundaries, and the flat layout of a group of parameters."""
import pytest
import torch


@pytest.mark.points(1)
def test_padded_numel_and_shard_range(zero):
    """Shards are equal slices of the buffer padded to a multiple of world_size, in rank order,
    covering it exactly; uneven sizes and world sizes that do not divide included."""
    p = zero.partition
    for numel in (1, 2, 7, 10, 12, 97, 1000, 1001):
        for ws in (1, 2, 3, 4, 5, 8):
            padded = p.padded_numel(numel, ws)
            assert padded % ws == 0 and numel <= padded < numel + ws, \
                f"padded_numel({numel}, {ws}) = {padded}: expected the smallest multiple of {ws} >= {numel}"
            bounds = [p.shard_range(numel, r, ws) for r in range(ws)]
            assert bounds[0][0] == 0 and bounds[-1][1] == padded, \
                f"shard_range({numel}, r, {ws}) must cover [0, {padded}) (the padded buffer), got {bounds}"
            for r, (a, b) in enumerate(bounds):
                assert b - a == padded // ws, \
                    f"shard_range({numel}, {r}, {ws}) = {(a, b)}: every shard has {padded // ws} elements"
                if r:
                    assert a == bounds[r - 1][1], \
                        f"shards {r - 1} and {r} of ({numel}, ws={ws}) overlap or leave a gap: {bounds}"


@pytest.mark.points(2)
def test_flat_group_layout(zero, rng):
    """flatten puts each tensor at its offset and zeros in the padding (and for a None gradient);
    views are views (writes through), shaped like the parameters; shard is this rank's slice."""
    shapes = [(5, 3), (7,), (2, 2, 3)]
    for ws in (2, 3, 4):
        for rank in range(ws):
            params = [torch.nn.Parameter(torch.randn(s, generator=rng)) for s in shapes]
            g = zero.partition.FlatParamGroup("m", ["m.a", "m.b", "m.c"], params, rank, ws)
            flat = g.flatten([p.detach() for p in params])
            assert flat.shape == (g.padded_numel,), f"flatten: shape {tuple(flat.shape)}, expected ({g.padded_numel},)"
            want = torch.cat([p.detach().reshape(-1) for p in params])
            torch.testing.assert_close(flat[:want.numel()], want, rtol=0, atol=0)
            assert (flat[want.numel():] == 0).all(), "flatten: the padding must be zeros"
            partial = g.flatten([None, params[1].detach(), None], dtype=torch.float64)
            assert partial.dtype == torch.float64, "flatten(dtype=...) must return that dtype"
            assert (partial[:15] == 0).all() and (partial[22:] == 0).all(), "flatten: a None tensor must give zeros"
            views = g.views(flat)
            for v, p in zip(views, params):
                assert v.shape == p.shape, f"views: shape {tuple(v.shape)}, expected {tuple(p.shape)}"
                torch.testing.assert_close(v, p.detach(), rtol=0, atol=0)
            flat.fill_(float("nan"))
            assert all(torch.isnan(v).all() for v in views), "views must be views of flat (no copies)"
            buf = torch.arange(g.padded_numel, dtype=torch.float32)
            s = g.shard(buf)
            a, b = zero.partition.shard_range(g.numel, rank, ws)
            torch.testing.assert_close(s, buf[a:b], rtol=0, atol=0)
            s.fill_(-1)
            assert (buf[a:b] == -1).all(), "shard must be a view of flat"
