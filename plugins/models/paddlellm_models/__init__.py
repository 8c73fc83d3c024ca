"""Model families (LLaMA, Qwen, Mistral, Mixtral, Gemma, GPT, OPT, Bloom, ...) for paddlellm."""
