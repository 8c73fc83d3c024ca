# The two commands of README.md. Both create .venv (once) and install every distribution.
.PHONY: setup demo test

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/llm run --model qwen --peft lora --align dpo

test: setup
	.venv/bin/python -m pytest
