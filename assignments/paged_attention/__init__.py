"""Assignment 3: paged-attention kernels in Triton. Read README.md first.

You write:  kernels.py  (reshape_and_cache, paged_attention_decode, the split-K version, its
                         reduction, choose_num_splits, and the paged_attention dispatcher)
"""
