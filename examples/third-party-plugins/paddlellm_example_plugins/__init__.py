"""Example third-party plugins, one per kind, using only ``paddlellm.api``."""
