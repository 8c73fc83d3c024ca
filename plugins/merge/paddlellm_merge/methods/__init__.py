"""Merge methods, one module per family; each object follows
:class:`paddlellm.interfaces.MergeMethod` and declares its parameters (``param_specs``)."""
