"""Trainer strategies (single, data/tensor/pipeline parallel, sharding) for paddlellm."""
