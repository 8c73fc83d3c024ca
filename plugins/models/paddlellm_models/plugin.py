"""Registers the model families (with their presets as aliases) and the ``llm models`` /
``llm convert`` commands. Importing this module never imports Paddle."""
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
def register_commands(app):
    from . import cli

    cli.add_commands(app)
