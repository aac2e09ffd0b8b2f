"""Assignment 4: the serving runtime. Read README.md first.

You write:  scheduler.py     (Scheduler.schedule, Scheduler.preempt)
            model_runner.py  (prepare_inputs, paged_attention_reference)
Given:      sequence.py, llm.py (LLM / LLMEngine, vLLM's offline interface)
Built from your earlier work: kv_cache (model, sampling, attend), block_manager
(KVCacheManager), paged_attention (the kernels, on a GPU).
"""
