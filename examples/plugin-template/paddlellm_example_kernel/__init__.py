"""A template paddlellm plugin distribution (copy this folder to start your own)."""
