"""Alignment losses (DPO family, KTO) for paddlellm."""
