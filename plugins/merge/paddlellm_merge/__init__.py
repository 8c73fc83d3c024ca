"""Model merging (linear, slerp, ties, dare, della) for paddlellm."""
