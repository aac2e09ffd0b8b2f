"""Every graded suite must tell a right answer from plausible wrong ones.

Each mutant is the reference solution with one realistic mistake; the listed tests must
fail on it (and pass on the reference, which the full-marks test checks).
"""
import pytest

from autograder.runner import run_assignment

KV_MUTANTS = {
    "top_p_over_the_whole_vocabulary": (
        {"kv_cache/sampling.py": [("probs = sorted_logits.masked_fill(drop, float(\"-inf\")).softmax(dim=-1)",
                                   "probs = sorted_logits.softmax(dim=-1)")]},
        "sets", ["test_top_k_top_p_sets"]),
    "temperature_after_top_p": (
        {"kv_cache/sampling.py": [
            ("filtered = apply_top_k_top_p(logits / params.temperature, params.top_k, params.top_p)",
             "filtered = apply_top_k_top_p(logits, params.top_k, params.top_p) / params.temperature")]},
        "frequencies", ["test_sampling_frequencies"]),
    "scores_in_bf16": (
        {"kv_cache/attention.py": [(
            "    out = F.scaled_dot_product_attention(q.float(), repeat_kv(k, n_rep).float(), "
            "repeat_kv(v, n_rep).float(),\n"
            "                                         attn_mask=mask, scale=scale)\n",
            "    scores = torch.matmul(q, repeat_kv(k, n_rep).transpose(-1, -2)) * scale  # in q's dtype\n"
            "    if mask is not None:\n"
            "        scores = scores.masked_fill(~mask, float('-inf'))\n"
            "    out = torch.matmul(scores.float().softmax(-1), repeat_kv(v, n_rep).float())\n")]},
        "scores_in_fp32", ["test_attend_bf16_scores_in_fp32"]),
    "a_new_generator_every_step": (
        {"kv_cache/generate.py": [("tok = sample(logits, params, generator)",
                                   "tok = sample(logits, params, None if generator is None else "
                                   "torch.Generator(device=device).manual_seed(params.seed))")]},
        "one_generator", ["test_one_generator_for_the_whole_generation"]),
    "cache_written_at_slot_0": (
        {"kv_cache/kv_cache.py": [("self.k[:, :, self.length:self.length + n] = k", "self.k[:, :, 0:n] = k")]},
        "append_prefill or decode_logits_match",
        ["test_append_prefill_then_decode", "test_decode_logits_match_transformers"]),
    "decode_rope_at_position_0": (
        {"kv_cache/generate.py": [("new_pos = lens[:, None] + step", "new_pos = torch.zeros_like(lens[:, None])")]},
        "greedy_matches", ["test_greedy_matches_transformers"]),
    "reset_keeps_stale_entries": (
        {"kv_cache/kv_cache.py": [("never read\n        self.length = 0", "never read\n        pass")]},
        "reset", ["test_reset_forgets_everything", "test_reused_cache_after_reset"]),
    "gqa_heads_tiled_not_grouped": (
        {"kv_cache/attention.py": [("return x[:, :, None].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)",
                                    "return x.repeat(1, n_rep, 1, 1)")]},
        "repeat_kv or decode_logits_match", ["test_repeat_kv_head_mapping", "test_decode_logits_match_transformers"]),
    "attend_prescales_q_in_place": (  # numerically right, but it overwrites the caller's queries
        {"kv_cache/attention.py": [("    T, S = q.shape[2], k.shape[2]\n",
                                    "    T, S = q.shape[2], k.shape[2]\n    q.mul_(scale)\n    scale = 1.0\n")]},
        "attend", ["test_attend_matches_reference"]),
    "scale_missing": (
        {"kv_cache/attention.py": [("attn_mask=mask, scale=scale)", "attn_mask=mask)")]},  # SDPA's default scale
        "attend", ["test_attend_matches_reference"]),
    "padding_not_masked": (
        {"kv_cache/attention.py": [("mask = valid if mask is None else mask & valid", "pass")]},
        "attend or left_padded or ragged",
        ["test_attend_matches_reference", "test_left_padded_batch", "test_ragged_batch"]),
    "bytes_without_v": (
        {"kv_cache/kv_cache.py": [("return 2 * config.num_layers", "return config.num_layers")]},
        "bytes", ["test_kv_cache_bytes_real_models", "test_formula_equals_allocated_bytes"]),
    "top_p_drops_crossing_token": (
        {"kv_cache/sampling.py": [("drop |= before >= top_p", "drop |= probs.cumsum(dim=-1) > top_p")]},
        "top_p or frequencies", ["test_top_k_top_p_sets", "test_sampling_frequencies"]),
    "seed_ignored": (
        {"kv_cache/generate.py": [("generator = torch.Generator(device=device).manual_seed(params.seed)",
                                   "generator = None")]},
        "seed", ["test_seed_reproduces"]),
    "eos_not_stopping": (
        {"kv_cache/generate.py": [("done |= torch.isin(tok, eos)", "pass")]},
        "eos", ["test_eos_and_max_tokens"]),
    # issue: every stated rule graded (docs/rules.md)
    "keys_returns_a_copy": (  # append returns views, keys() a copy of the filled part
        {"kv_cache/kv_cache.py": [("return self.keys(), self.values()",
                                   "return self.k[:, :, :self.length], self.v[:, :, :self.length]"),
                                  ("return self.k[:, :, :self.length]\n        # END",
                                   "return self.k[:, :, :self.length].clone()\n        # END")]},
        "append_prefill", ["test_append_prefill_then_decode"]),
    "reset_reallocates_the_buffers": (
        {"kv_cache/kv_cache.py": [("never read\n        self.length = 0",
                                   "never read\n        self.length = 0\n"
                                   "        self.k, self.v = torch.empty_like(self.k), torch.empty_like(self.v)")]},
        "reset", ["test_reset_forgets_everything"]),
    "sampling_in_the_logits_dtype": (
        {"kv_cache/sampling.py": [("    logits = logits.float()\n", "")]},
        "float32", ["test_sample_works_in_float32"]),
}


BM = "block_manager/"
BLOCK_MUTANTS = {
    "free_releases_head_first": (
        {BM + "kv_cache_manager.py": [("self.pool.free_blocks(list(reversed(seq.blocks)))",
                                       "self.pool.free_blocks(list(seq.blocks))")]},
        "tail_first", ["test_free_releases_the_tail_first"]),
    "watermark_ignores_revived_cached_blocks": (
        {BM + "kv_cache_manager.py": [("if not self.can_allocate(new + revived):", "if not self.can_allocate(new):")]},
        "revived", ["test_watermark_counts_revived_cached_blocks"]),
    "hashes_blocks_with_caching_off": (
        {BM + "block_pool.py": [
            ("        if not self.enable_caching:\n            return\n        block.block_hash = block_hash\n",
             "        block.block_hash = block_hash\n")]},
        "caching_off", ["test_prefix_caching_off"]),
    "whole_prompt_served_from_cache": (
        {BM + "kv_cache_manager.py": [("block_hashes(token_ids[:len(token_ids) - 1], self.block_size)",
                                       "block_hashes(token_ids, self.block_size)")]},
        "prefix_hit or random", ["test_prefix_hit_and_fully_cached_prompt", "test_random_operation_sequences"]),
    "no_copy_on_write": (
        {BM + "kv_cache_manager.py": [("return int(bool(seq.blocks) and partial and seq.blocks[-1].ref_cnt > 1)",
                                       "return 0")]},
        "fork or random", ["test_fork_copy_on_write", "test_random_operation_sequences"]),
    "blocks_needed_rounds_wrong": (
        {BM + "kv_cache_manager.py": [("return -(-num_tokens // self.block_size)",
                                       "return num_tokens // self.block_size + 1")]},
        "watermark or random", ["test_watermark_and_out_of_blocks", "test_random_operation_sequences"]),
    "double_free_unchecked": (
        {BM + "block_pool.py": [("            if drops[block.block_id] > block.ref_cnt:\n",
                                 "            if False:\n")]},
        "misuse", ["test_misuse_raises_and_changes_nothing"]),
    "evicted_block_stays_in_cache": (
        {BM + "block_pool.py": [("                del self.cached_block_hash_to_block[block.block_hash]",
                                 "                pass")]},
        "revive or random", ["test_cached_blocks_revive_and_evict_lru", "test_random_operation_sequences"]),
    "revived_block_left_in_free_queue": (
        {BM + "block_pool.py": [
            ("            if block.ref_cnt == 0:\n                self.free_block_queue.remove(block)",
             "            if False:\n                pass")]},
        "revive or random", ["test_cached_blocks_revive_and_evict_lru", "test_random_operation_sequences"]),
    "hash_ignores_parent": (
        {BM + "hashing.py": [
            ('h.update(b"root" if parent_block_hash is None else parent_block_hash.to_bytes(8, "little"))', "pass")]},
        "chained or random", ["test_chained_hashes"]),
    "freed_block_put_at_front": (
        {BM + "block.py": [("        block.prev_free_block, block.next_free_block = self.tail, None\n"
                            "        if self.tail is not None:\n            self.tail.next_free_block = block\n"
                            "        else:\n            self.head = block\n        self.tail = block",
                            "        block.prev_free_block, block.next_free_block = None, self.head\n"
                            "        if self.head is not None:\n            self.head.prev_free_block = block\n"
                            "        else:\n            self.tail = block\n        self.head = block")]},
        "queue or ref_counts", ["test_queue_order_remove_append", "test_allocate_free_and_ref_counts"]),
    # issue: every stated rule graded (docs/rules.md)
    "duplicate_cached_block_left_without_hash": (
        {BM + "block_pool.py": [("        block.block_hash = block_hash\n"
                                 "        self.cached_block_hash_to_block.setdefault(block_hash, block)",
                                 "        if block_hash not in self.cached_block_hash_to_block:\n"
                                 "            block.block_hash = block_hash\n"
                                 "            self.cached_block_hash_to_block[block_hash] = block")]},
        "duplicate", ["test_duplicate_cached_block_keeps_its_hash"]),
    "prefix_lookup_skips_a_miss": (
        {BM + "kv_cache_manager.py": [("            if block is None:\n                break",
                                       "            if block is None:\n                continue")]},
        "first_miss", ["test_prefix_lookup_stops_at_the_first_miss"]),
    "prefix_lookup_takes_references": (  # touch() in get_computed_blocks instead of allocate
        {BM + "kv_cache_manager.py": [("            hits.append(block)\n        return hits",
                                       "            hits.append(block)\n        "
                                       "self.pool.touch(hits)\n        return hits"),
                                      ("        self.pool.touch(hits)\n        seq = SequenceBlocks",
                                       "        seq = SequenceBlocks")]},
        "revived or first_miss",
        ["test_watermark_counts_revived_cached_blocks", "test_prefix_lookup_stops_at_the_first_miss"]),
    "append_slots_forgets_the_copy_block": (
        {BM + "kv_cache_manager.py": [("if needed + cow > self.get_num_free_blocks():",
                                       "if needed > self.get_num_free_blocks():")]},
        "copy_on_write_block", ["test_append_slots_counts_the_copy_on_write_block"]),
    "fork_shares_the_token_list": (
        {BM + "kv_cache_manager.py": [("SequenceBlocks(list(parent.token_ids), list(parent.blocks))",
                                       "SequenceBlocks(parent.token_ids, list(parent.blocks))")]},
        "fork", ["test_fork_copy_on_write"]),
    "fork_shares_the_block_list": (
        {BM + "kv_cache_manager.py": [("SequenceBlocks(list(parent.token_ids), list(parent.blocks))",
                                       "SequenceBlocks(list(parent.token_ids), parent.blocks)")]},
        "fork", ["test_fork_copy_on_write"]),
    "free_blocks_checks_while_freeing": (
        {BM + "block_pool.py": [
            ("        drops: dict[int, int] = {}\n        for block in ordered_blocks:\n            self._own(block)\n"
             "            drops[block.block_id] = drops.get(block.block_id, 0) + 1\n"
             "            if drops[block.block_id] > block.ref_cnt:\n",
             "        for block in ordered_blocks:\n            self._own(block)\n            "
             "if block.ref_cnt == 0:\n")]},
        "misuse", ["test_misuse_raises_and_changes_nothing"]),
    "get_new_blocks_checks_while_taking": (  # raises from an empty queue after taking some
        {BM + "block_pool.py": [("        if num_blocks > self.get_num_free_blocks():\n", "        if False:\n")]},
        "misuse", ["test_misuse_raises_and_changes_nothing"]),
    "hash_with_pythons_hash": (  # tokens and parent through hash(): salted per process for str, a trap
        {BM + "hashing.py": [("    return int.from_bytes(h.digest()[:8], \"little\")",
                              "    return hash((parent_block_hash, tuple(token_ids), \"salt\")) % 2**64")]},
        "stable", ["test_hash_is_stable_across_processes"]),
    "free_queue_remove_walks": (  # O(n): looks the block up in the whole queue before unlinking it
        {BM + "block.py": [("        if prev is None and nxt is None and self.head is not block:",
                            "        if block not in self.get_all_free_blocks():")]},
        "walk", ["test_queue_operations_do_not_walk_the_queue"]),
}
PA = "paged_attention/kernels.py"
PA_MUTANTS = {
    "slot_zero_taken_for_padding": (
        {PA: [("mask = (idx < NUM_KV_HEADS * HEAD_SIZE) & (slot >= 0)",
               "mask = (idx < NUM_KV_HEADS * HEAD_SIZE) & (slot > 0)")]},
        "writes_exactly", ["test_writes_exactly_the_given_slots"]),
    "dispatcher_split_branch_loses_the_scale": (
        {PA: [("    return paged_attention_decode_split_k(query, key_cache, value_cache, block_tables, seq_lens, "
               "scale, n,\n",
               "    return paged_attention_decode_split_k(query, key_cache, value_cache, block_tables, seq_lens, "
               "1.0, n,\n")]},
        "dispatcher", ["test_dispatcher_and_split_choice"]),
    "off_by_one_on_the_last_token": (
        {PA: [("end = tl.minimum(start + partition_size, seq_len)",
               "end = tl.minimum(start + partition_size, seq_len - 1)")]},
        "decode_matches or split_k", ["test_decode_matches_reference", "test_split_k_matches_reference"]),
    "tail_not_masked_in_softmax": (
        {PA: [('s = tl.where(tmask[None, :], s * scale, float("-inf"))', "s = s * scale")]},
        "decode_matches", ["test_decode_matches_reference"]),
    "wrong_kv_head_for_query_head": (
        {PA: [("head = kvh * QUERY_GROUP + g", "head = g * NUM_KV_HEADS + kvh")]},
        "mapping or decode_matches", ["test_query_head_to_kv_head_mapping", "test_decode_matches_reference"]),
    "scale_applied_twice": (
        {PA: [('s = tl.where(tmask[None, :], s * scale, float("-inf"))',
               's = tl.where(tmask[None, :], s * scale * scale, float("-inf"))')]},
        "decode_matches", ["test_decode_matches_reference"]),
    "softmax_without_max_subtraction": (
        {PA: [("m_new = tl.maximum(m_i, tl.max(s, 1))", "m_new = tl.zeros_like(m_i)")]},
        "large_logits", ["test_large_logits_need_the_max_subtracted"]),
    "splits_reduced_without_rescaling": (
        {PA: [("w = tl.where(smask, l * tl.exp(m - big), 0.0)", "w = tl.where(smask, l, 0.0)")]},
        "split_k", ["test_split_k_matches_reference"]),
    "decode_scribbles_on_the_cache": (
        {PA: [("    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]\n",
               "    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]\n"
               "    tl.store(k_cache_ptr + d, tl.zeros([HEAD_SIZE], tl.float32).to(k_cache_ptr.dtype.element_ty))\n")]},
        "decode_matches", ["test_decode_matches_reference"]),
    "block_and_offset_swapped_on_write": (
        {PA: [("dst = (slot // BLOCK_SIZE) * stride_cb + (slot % BLOCK_SIZE) * stride_ct",
               "dst = (slot % BLOCK_SIZE) * stride_cb + (slot // BLOCK_SIZE) * stride_ct")]},
        "given_slots", ["test_writes_exactly_the_given_slots"]),
    # issue: every stated rule graded (docs/rules.md)
    "reshape_assumes_contiguous_tokens": (  # key.stride(0) taken as num_kv_heads * head_size
        {PA: [("        key.stride(0), key.stride(1), value.stride(0), value.stride(1),\n",
               "        H * D, D, H * D, D,\n")]},
        "strided", ["test_reshape_and_cache_strided_inputs"]),
    "splits_shorter_than_128_tokens": (
        {PA: [("return max(1, min(want, max_seq_len // 128))", "return max(1, want)")]},
        "at_least_128", ["test_splits_keep_at_least_128_tokens"]),
    "decode_ignores_out": (
        {PA: [("    out = torch.empty_like(query) if out is None else out\n    "
               "# BEGIN SOLUTION hint: grid (num_seqs, num_kv_heads, 1)",
               "    out = torch.empty_like(query)\n    # BEGIN SOLUTION hint: grid (num_seqs, num_kv_heads, 1)")]},
        "decode_matches", ["test_decode_matches_reference"]),
    "split_k_ignores_out": (
        {PA: [("    out = torch.empty_like(query) if out is None else out\n    # BEGIN SOLUTION hint: partition",
               "    out = torch.empty_like(query)\n    # BEGIN SOLUTION hint: partition")]},
        "split_k", ["test_split_k_matches_reference"]),
}
EN = "engine/"
ENGINE_MUTANTS = {
    "decode_only_when_any_sequence_decodes": (
        {EN + "model_runner.py": [("max(lens), all(p.num_tokens == 1 for p in plan))",
                                   "max(lens), any(p.num_tokens == 1 for p in plan))")]},
        "kernel_path", ["test_kernel_path_on_cpu"]),
    "preempted_sequence_requeued_last": (
        {EN + "scheduler.py": [("self.waiting.appendleft(seq)", "self.waiting.append(seq)")]},
        "requeues", ["test_preemption_takes_the_newest_and_requeues_it_first"]),
    "prefill_chunk_ignores_budget": (
        {EN + "scheduler.py": [("n = min(seq.num_tokens - hit, budget)", "n = seq.num_tokens - hit")]},
        "chunked or fcfs", ["test_chunked_prefill", "test_budget_seats_and_fcfs"]),
    "chunk_positions_restart_at_0": (
        {EN + "model_runner.py": [("pos += range(c, c + p.num_tokens)", "pos += range(p.num_tokens)")]},
        "ragged or chunked", ["test_batch_of_ragged_prompts", "test_chunked_prefill"]),
    "preemption_keeps_blocks": (
        {EN + "scheduler.py": [
            ("        self.running.remove(seq)\n        self.kv.free(seq.seq_id)\n        seq.num_computed_tokens = 0",
             "        self.running.remove(seq)\n        seq.num_computed_tokens = 0")]},
        "preemption", ["test_preemption_by_recompute", "test_preemption_takes_the_newest_and_requeues_it_first"]),
    "every_sequence_reads_the_first_block_table": (
        {EN + "model_runner.py": [("blocks = inputs.block_tables[s, idx // bs].long()",
                                   "blocks = inputs.block_tables[0, idx // bs].long()")]},
        "ragged", ["test_batch_of_ragged_prompts"]),
}
ZE = "zero/"
ZERO_MUTANTS = {
    "prefetch_gathers_twice": (
        {ZE + "engine.py": [("        if g.pending is not None:\n            work, flat = g.pending\n",
                             "        if False:\n            work, flat = g.pending\n")]},
        "communication_per_step", ["test_communication_per_step"]),
    "gradients_summed_not_averaged": (
        {ZE + "comm.py": [
            ("return PendingMean(work, shard, self.world_size) if async_op else shard.div_(self.world_size)",
             "return PendingMean(work, shard, 1) if async_op else shard")]},
        "mean_reductions or prefetch", ["test_mean_reductions", "test_stage3_prefetch"]),
    # the backward's reduction started and never waited for: it is never divided (nor known done)
    "async_reduction_not_tracked": (
        {ZE + "engine.py": [("self._track(self.comm.reduce_scatter_mean(g.grad_shard, full, async_op=True), full)",
                             "self.comm.reduce_scatter_mean(g.grad_shard, full, async_op=True)")]},
        "single_process_adamw and (2-2 or 3-3)",
        ["test_matches_single_process_adamw"]),
    "copy_of_a_missing_gradient": (
        {ZE + "engine.py": [("view.copy_(p.grad) if p.grad is not None else view.zero_()", "view.copy_(p.grad)")]},
        "without_gradient", ["test_parameter_without_gradient"]),
    "memory_counts_unpadded_params": (
        {ZE + "engine.py": [("            params = sum(nbytes(g.flat) for g in self.groups)\n",
                             "            params = sum(g.numel * g.flat.element_size() for g in self.groups)\n")]},
        "counts_padding", ["test_memory_report_counts_padding"]),
    "shards_of_the_unpadded_size": (
        {ZE + "partition.py": [
            ("shard = padded_numel(numel, world_size) // world_size\n    return rank * shard, (rank + 1) * shard",
             "shard = numel // world_size\n    return rank * shard, min((rank + 1) * shard, numel)")]},
        "shard_range or prefetch", ["test_padded_numel_and_shard_range", "test_stage3_prefetch"]),
    "stage3_reuses_a_stale_gather": (
        {ZE + "engine.py": [
            ("            flat = self._full_buffer(g)\n"
             "            self.comm.all_gather(flat, g.param_shard)\n",
             "            flat = getattr(g, 'kept', None)\n            if flat is None:\n"
             "                flat = torch.empty(g.padded_numel, dtype=self.config.dtype, device=self.device)\n"
             "                self.comm.all_gather(flat, g.param_shard)\n                g.kept = flat\n"),
            ("        g.flat.untyped_storage().resize_(0)\n", "")]},
        "single_process_adamw", ["test_matches_single_process_adamw"]),
    "optimizer_state_for_the_full_model": (
        {ZE + "engine.py": [("self.exp_avg = torch.zeros(total, dtype=torch.float32, device=dev)",
                             "self.exp_avg = torch.zeros(sum(g.padded_numel for g in self.groups), "
                             "dtype=torch.float32, device=dev)")]},
        "memory_per_rank", ["test_memory_per_rank"]),
    # a new buffer per gather, merely dropped on release: what autograd saved keeps every unit gathered
    "stage3_release_keeps_the_gathered_storage": (
        {ZE + "engine.py": [("        g.flat.untyped_storage().resize_(0)\n", ""),
                            ("            flat = self._full_buffer(g)\n",
                             "            flat = torch.empty(g.padded_numel, dtype=self.config.dtype, "
                             "device=self.device)\n")]},
        "frees_each_unit", ["test_stage3_frees_each_unit_after_its_forward"]),
    "reduce_keeps_autograds_gradients": (
        {ZE + "engine.py": [
            ("        for p in g.params:\n            p.grad = None\n        g.grads_ready = len(g.params)",
             "        g.grads_ready = len(g.params)")]},
        "memory_per_rank", ["test_memory_per_rank"]),
    "stage1_writes_back_only_its_own_shard": (
        {ZE + "engine.py": [("self.comm.all_gather(g.flat, g.master.to(cfg.dtype))",
                             "g.shard(g.flat).copy_(g.master)")]},
        "communication_per_step", ["test_communication_per_step"]),
    "adamw_without_bias_correction": (
        {ZE + "adamw.py": [("bias_correction1 = 1 - beta1 ** step", "bias_correction1 = 1.0")]},
        "adamw_matches", ["test_adamw_matches_torch"]),
    "adam_with_l2_not_decoupled_decay": (
        {ZE + "adamw.py": [("    param.mul_(1 - lr * weight_decay)\n",
                            "    grad = grad.add(param, alpha=weight_decay)\n")]},
        "adamw_matches", ["test_adamw_matches_torch"]),
    "all_reduce_counted_as_one_pass": (
        {ZE + "comm.py": [("return 2 * per_pass if op == \"all_reduce\" else per_pass",
                           "return per_pass")]},
        "ring_bytes or communication_per_step", ["test_ring_bytes", "test_communication_per_step"]),
    # issue: every stated rule graded (docs/rules.md)
    "release_keeps_the_gathered_buffer": (
        {ZE + "engine.py": [("            p.data = torch.empty(0, dtype=self.config.dtype, "
                             "device=self.device)\n        g.flat = None",
                             "            p.data = torch.empty(0, dtype=self.config.dtype, device=self.device)")]},
        "memory_per_rank", ["test_memory_per_rank"]),
    "views_are_copies": (
        {ZE + "partition.py": [("return [flat[off:off + n].view(shape) for",
                                "return [flat[off:off + n].clone().view(shape) for")]},
        "flat_group_layout", ["test_flat_group_layout"]),
}
MUTANTS = ({("engine", k): v for k, v in ENGINE_MUTANTS.items()} | {("kv_cache", k): v for k, v in KV_MUTANTS.items()}
           | {("block_manager", k): v for k, v in BLOCK_MUTANTS.items()}
           | {("paged_attention", k): v for k, v in PA_MUTANTS.items()}
           | {("zero", k): v for k, v in ZERO_MUTANTS.items()})


@pytest.mark.slow
@pytest.mark.parametrize("assignment,mutant", sorted(MUTANTS), ids=[f"{a}-{m}" for a, m in sorted(MUTANTS)])
def test_mutant_loses_points(submission, assignment, mutant):
    patches, keyword, must_fail = MUTANTS[(assignment, mutant)]
    result = run_assignment(assignment, submission(patches), keyword=keyword)
    failed = {t.nodeid.split("::")[-1].split("[")[0] for t in result.tests if t.status == "failed"}
    missing = [t for t in must_fail if t not in failed]
    assert not missing, f"mutant {mutant} was not caught by {missing}; failed: {sorted(failed)}"
