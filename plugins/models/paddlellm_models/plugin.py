"""Registers the model families (with their presets as aliases), Yuan's ``yuan_lfa`` KV-cache
layout and the ``llm models`` / ``llm convert`` commands. Importing this module never imports Paddle."""
from __future__ import annotations

from paddlellm.api import hookimpl

from .families import FAMILIES
from .registry_data import family_objects


@hookimpl
def register_models(register):
    for name, family in family_objects().items():
        register(name, FAMILIES[name], description=family.description,
                 aliases=[a for a in (*family.aliases, *family.presets) if a != name])


@hookimpl
def register_kv_cache_layouts(register):
    register("yuan_lfa", "paddlellm_models.lfa:YUAN_LFA",
             description="float keys/values plus Yuan 2.0's localized-filter inputs per position")


@hookimpl
def register_commands(app):
    from . import cli

    cli.add_commands(app)
