"""``costwatch demo``: a realistic mixed LLM workload driven through the public API."""
