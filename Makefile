# The two commands of README.md. Both create .venv (once) and install every distribution.
# `make test` also builds .venv-oracle (torch CPU, transformers, peft, trl, lm-eval: dev-only reference
# tools, never runtime dependencies) so the interop tests run instead of skipping.
.PHONY: setup oracle demo test

setup:
	bash scripts/setup.sh

oracle:
	bash scripts/oracle_env.sh

demo: setup
	.venv/bin/llm run --model qwen --peft lora --align dpo

test: setup oracle
	PADDLELLM_DEV_PYTHON=$${PADDLELLM_DEV_PYTHON:-$(CURDIR)/.venv-oracle/bin/python} .venv/bin/python -m pytest -rs
