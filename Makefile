# The two commands of README.md. Both create .venv (once) and install every distribution.
# `make test` also builds .venv-oracle (torch CPU, transformers, peft, trl, lm-eval: dev-only reference
# tools, never runtime dependencies) so the interop tests run instead of skipping.
.PHONY: setup oracle demo test bench-peers

setup:
	bash scripts/setup.sh

oracle:
	bash scripts/oracle_env.sh

demo: setup
	.venv/bin/llm run --model qwen --peft lora --align dpo

test: setup oracle
	PADDLELLM_DEV_PYTHON=$${PADDLELLM_DEV_PYTHON:-$(CURDIR)/.venv-oracle/bin/python} .venv/bin/python -m pytest -rs

# Inference side by side with transformers, llama.cpp (built here from source) and vLLM's CPU
# wheel on the same weights; dev-only environments (.venv-bench, .venv-bench-vllm); prints the
# table of benchmarks/README.md. ~15 min the first time (llama.cpp compiles), ~8 min after.
bench-peers: setup
	bash scripts/bench_env.sh
	.venv/bin/python benchmarks/peer_bench.py --rounds 3 --json peer.json
