"""Assignment 5: ZeRO partitioning (the DeepSpeed part). Read README.md first.

You write:  partition.py  (padded_numel, shard_range, FlatParamGroup.flatten / views / shard)
            comm.py       (ring_bytes, Comm.all_reduce_mean_, Comm.reduce_scatter_mean)
            adamw.py      (adamw_)
            engine.py     (ZeroEngine: state layout, gradient reduction, stage-3 gather/release,
                           step, memory)
Given:      the engine's skeleton (hooks, config, gather_fp32_params).
"""
