"""Command-line options derived from :class:`~paddlellm.engine.config.EngineConfig`.

A command declares which engine options it takes and receives them as one validated,
frozen ``config``::

    @engine_options(["model_name_or_path", "dtype", "device"])
    def chat(config: EngineConfig, system: str = typer.Option(None, "--system")) -> None: ...

Each option becomes ``--<name>`` with the field's type, help, default and help panel (and,
with ``envvar=True``, the variables ``PADDLELLM_<NAME>``), so a flag cannot be spelt, typed or
documented differently from the config field it sets. A bad value ends the command with
``error: --name: ...`` (exit 2), before anything loads.
"""
from __future__ import annotations

import inspect
import typing
from typing import Any, Callable, List, Optional, Sequence

import typer
from pydantic import ValidationError

from ..engine.config import EngineConfig, describe_validation_error
from ..errors import ConfigError

__all__ = ["engine_options", "option_for"]

CONFIG_PARAM = "config"


def _cli_type(annotation: Any) -> type:
    """The click type of an option; a bool takes a value (``--name false``, as the run
    config's flags do), which the config's validation parses (true/false, 1/0, yes/no)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    inner = args[0] if args else annotation
    if inner is bool:
        return str
    if inner not in (str, int, float):
        raise TypeError(f"engine option of type {annotation!r} has no command-line form")
    return inner


def option_for(name: str, *, envvar: bool = False) -> tuple[type, Any]:
    """``(annotation, typer.Option)`` of the engine option ``name``: the config field's
    default and help (click applies ``PADDLELLM_<NAME>`` between the default and the flag)."""
    field = EngineConfig.model_fields[name]
    extra = field.json_schema_extra or {}
    if extra.get("nargs") == "+":  # --flag A B ... (and the flag repeated)
        from .options import VARIADIC_OPTIONS

        VARIADIC_OPTIONS.add(EngineConfig.flag(name))
        info = typer.Option(
            None, EngineConfig.flag(name), help=field.description, show_default=False,
            envvar=EngineConfig.env_vars(name) if envvar else None,
            rich_help_panel=EngineConfig.panel(name), metavar=extra.get("metavar"))
        return Optional[List[str]], info
    info = typer.Option(
        field.default, EngineConfig.flag(name), help=field.description,
        show_default=field.default is not None,
        envvar=EngineConfig.env_vars(name) if envvar else None,
        rich_help_panel=EngineConfig.panel(name), metavar=extra.get("metavar"))
    return Optional[_cli_type(field.annotation)], info


def engine_options(names: Sequence[str] | None = None, *,
                   envvar: bool = False) -> Callable[[Callable], Callable]:
    """Decorate a command that takes ``config: EngineConfig``: the options ``names`` (default:
    every field) are added to its command line and parsed into ``config``; ``envvar``: each
    is also read from ``PADDLELLM_<NAME>`` when its flag is not given."""
    names = list(EngineConfig.model_fields if names is None else names)
    for name in names:
        EngineConfig.flag(name)  # KeyError for a name that is not an option

    def decorate(fn: Callable) -> Callable:
        hints = typing.get_type_hints(fn)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(fn).parameters.values() if p.name != CONFIG_PARAM]
        added = []
        for name in names:
            annotation, info = option_for(name, envvar=envvar)
            added.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info,
                                           annotation=annotation))
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]

        def command(**kwargs: Any) -> Any:
            given = {}
            for name in names:
                value = kwargs.pop(name)
                if value is not None and value != ():  # () : a list option not given
                    given[name] = value
            try:
                config = EngineConfig(**given)
            except ValidationError as exc:  # `error: --name: ...`, exit 2
                raise ConfigError(describe_validation_error(exc, EngineConfig.flag)) from None
            return fn(**{CONFIG_PARAM: config}, **kwargs)

        params = own + added
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
            setattr(command, attr, getattr(fn, attr))
        command.engine_option_names = tuple(names)  # type: ignore[attr-defined]
        return command

    return decorate
