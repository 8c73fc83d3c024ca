"""Data: the generated demo tasks and language-model batching."""
