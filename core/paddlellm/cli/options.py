"""One spelling layer for every ``llm`` command's options.

Every long option is spelt with underscores (``--model_name_or_path``, as in PaddleNLP's LLM
suite and this project's README), and every command also accepts the dashed spelling
(``--model-name-or-path``, typer's default). :class:`SpellingGroup` is the root group's class:
it renames the options of every command (plugins' included) to the underscore form, so help
shows that form, and rewrites a dashed option on the command line to its underscore form
before the command parses it.

Commands that parse their own arguments (``llm run``, ``llm merge``, ``llm quantize``) are
declared with ``cls=PassThroughCommand.listing(rows)``, where ``rows()`` returns their options
(:class:`HelpOption`, grouped in panels), so ``--help`` shows them in the same style as every
other command; they normalise their own arguments with :func:`canonical_args`.
This module is part of the public API for plugin authors.
"""
from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

__all__ = ["canonical", "canonical_args", "SpellingGroup", "PassThroughCommand",
           "HelpOption", "fields_help_options"]


def canonical(opt: str) -> str:
    """``--model-name-or-path`` -> ``--model_name_or_path`` (short options unchanged)."""
    if opt.startswith("--") and len(opt) > 2:
        return "--" + opt[2:].replace("-", "_")
    return opt


def canonical_args(args: Sequence[str], known: Iterable[str] | None = None) -> list[str]:
    """Rewrite dashed long options to their underscore spelling, up to a bare ``--``.

    With ``known`` only options whose underscore form is in ``known`` are rewritten (so
    values and unknown tokens pass through untouched); ``--opt-name=value`` keeps its value.
    """
    known_set = None if known is None else set(known)
    out: list[str] = []
    for i, tok in enumerate(args):
        if tok == "--":
            return out + list(args[i:])
        if tok.startswith("--") and len(tok) > 2:
            name, eq, value = tok.partition("=")
            fixed = canonical(name)
            if known_set is None or fixed in known_set:
                tok = fixed + eq + value
        out.append(tok)
    return out


#: options that take one or more values after one flag (argparse's ``nargs="+"``, vLLM's
#: ``--lora-modules a=path b=path``): on the command line ``--opt A B`` becomes
#: ``--opt A --opt B`` (click's repeated form) before the command parses it
VARIADIC_OPTIONS: set[str] = set()


def _long_options(param: Any) -> tuple[list[str], list[str]] | None:
    """``(opts, secondary_opts)`` of an option parameter (None for arguments)."""
    if getattr(param, "param_type_name", None) != "option":
        return None
    return list(getattr(param, "opts", [])), list(getattr(param, "secondary_opts", []))


def _subcommands(command: Any) -> dict[str, Any]:
    return dict(getattr(command, "commands", None) or {})


def _canonicalise_params(command: Any) -> None:
    """Rename the long options of ``command`` (and its subcommands) to underscores."""
    for param in command.params:
        names = _long_options(param)
        if names is not None:
            param.opts = _dedupe(canonical(o) for o in names[0])
            param.secondary_opts = _dedupe(canonical(o) for o in names[1])
    for sub in _subcommands(command).values():
        _canonicalise_params(sub)


def _dedupe(opts: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for o in opts:
        if o not in seen:
            seen.append(o)
    return seen


def _option_arity(command: Any) -> dict[str, int]:
    """Option string -> how many values follow it on the command line."""
    arity: dict[str, int] = {}
    for param in command.params:
        names = _long_options(param)
        if names is None:
            continue
        flag = getattr(param, "is_flag", False) or getattr(param, "count", False)
        n = 0 if flag else max(int(getattr(param, "nargs", 1) or 1), 1)
        for o in (*names[0], *names[1]):
            arity[o] = n
    return arity


def _normalise_for(command: Any, args: list[str]) -> list[str]:
    """``args`` of ``command`` with its own dashed options rewritten (recursing into groups)."""
    arity = _option_arity(command)
    subcommands = _subcommands(command)
    out: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            return out + args[i:]
        if tok.startswith("--") and len(tok) > 2:
            name, eq, value = tok.partition("=")
            fixed = canonical(name)
            if fixed in VARIADIC_OPTIONS and fixed in arity and not eq:
                values = []
                i += 1
                while i < len(args) and not args[i].startswith("-"):
                    values.append(args[i])
                    i += 1
                for value in values or [None]:  # no value: click reports it
                    out += [fixed] if value is None else [fixed, value]
                continue
            if fixed in arity:
                n = 0 if eq else arity[fixed]
                out.append(fixed + eq + value)
                out.extend(args[i + 1:i + 1 + n])  # its values pass through untouched
                i += 1 + n
                continue
        elif subcommands and tok in subcommands:
            return out + [tok] + _normalise_for(subcommands[tok], args[i + 1:])
        out.append(tok)
        i += 1
    return out


class SpellingGroup(TyperGroup):
    """The root group: underscore option names everywhere; dashed spellings accepted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _canonicalise_params(self)

    def add_command(self, cmd: Any, name: str | None = None) -> None:
        _canonicalise_params(cmd)
        super().add_command(cmd, name)

    def resolve_command(self, ctx: Any, args: list[str]):
        name, cmd, rest = super().resolve_command(ctx, args)
        if cmd is not None:
            rest = _normalise_for(cmd, list(rest))
        return name, cmd, rest


class PassThroughCommand(TyperCommand):
    """A command that parses its own ``--key value`` arguments (``ctx.args``) and whose
    ``--help`` lists the options of ``help_options()`` (see :meth:`listing`)."""

    help_options: Callable[[], list[HelpOption]] | None = None
    usage_pieces: str = "[OPTIONS]"

    @classmethod
    def listing(cls, help_options: Callable[[], list["HelpOption"]],
                usage: str = "[OPTIONS]") -> type["PassThroughCommand"]:
        """A subclass whose help lists ``help_options()`` (called only when help is shown)
        after ``Usage: llm NAME <usage>``:
        ``app.command("merge", cls=PassThroughCommand.listing(rows, "[CONFIG] [OPTIONS]"))``."""
        return type(cls.__name__, (cls,), {"help_options": staticmethod(help_options),
                                           "usage_pieces": usage})

    def format_help(self, ctx: Any, formatter: Any) -> None:
        rows = list(self.help_options()) if self.help_options else []
        shown = _help_command(self.name or "", self.help or "", rows)
        shown.epilog = self.epilog
        shown.options_metavar = self.usage_pieces
        _canonicalise_params(shown)
        shown.format_help(ctx, formatter)


@dataclass
class HelpOption:
    """One row of a :class:`PassThroughCommand`'s help."""

    name: str
    help: str = ""
    default: Any = None
    panel: str | None = None
    metavar: str | None = None
    flag: bool = False
    required: bool = False


def _help_command(name: str, help_text: str, rows: list[HelpOption]) -> Any:
    """A command built by typer itself whose parameters are ``rows`` (help only)."""
    params = []
    for i, row in enumerate(rows):
        show = row.default is not None and row.default != "" and not row.required and not row.flag
        info = typer.Option(
            False if row.flag else (... if row.required else (row.default if show else None)),
            "--" + row.name.lstrip("-"),
            help=row.help or None,
            show_default=show,
            metavar=None if row.flag else (row.metavar or "TEXT"),
            rich_help_panel=row.panel,
        )
        params.append(inspect.Parameter(f"p{i}", inspect.Parameter.KEYWORD_ONLY, default=info,
                                        annotation=bool if row.flag else str))

    def listing(**_: Any) -> None:  # never called: only its help is rendered
        pass

    listing.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    listing.__doc__ = help_text
    app = typer.Typer(add_completion=False)
    app.command(name)(listing)
    app.command("_unused", hidden=True)(lambda: None)  # two commands keep it a group
    group = typer.main.get_command(app)
    return group.commands[name]


def _metavar(annotation: Any) -> tuple[str, bool]:
    """A metavar for a pydantic annotation, and whether it is a bool flag."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _metavar(args[0])
    if annotation is bool:
        return "", True
    if origin is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(annotation)), False
    if origin in (list, tuple):
        inner = _metavar(args[0])[0] if args else "TEXT"
        return f"{inner} ...", False
    if origin in (typing.Union, types.UnionType):
        lists = [a for a in args if typing.get_origin(a) in (list, tuple)]
        if lists:  # "q_proj" or ["q_proj", "v_proj"]
            return _metavar(lists[0])
        return "|".join(_metavar(a)[0] or "BOOL" for a in args), False
    names = {int: "INTEGER", float: "FLOAT", str: "TEXT"}
    return names.get(annotation, "TEXT"), False


def fields_help_options(model_cls: Any, panel: str | None, *, skip: Iterable[str] = ()) -> list[HelpOption]:
    """Help rows for the fields of a pydantic model (default and description shown)."""
    from pydantic_core import PydanticUndefined

    rows = []
    skip = set(skip)
    for key, field in model_cls.model_fields.items():
        if key in skip or field.exclude:
            continue
        metavar, flag = _metavar(field.annotation)
        help_text = field.description or ""
        if len(metavar) > 12:  # long choice lists go in the help, keeping the name readable
            choices = metavar.split("|")
            if not all(c in help_text for c in choices):
                help_text = f"{help_text} (one of: {', '.join(choices)})".strip()
            metavar = "TEXT"
        required = field.default is PydanticUndefined and field.default_factory is None
        default = None if field.default is PydanticUndefined else field.default
        rows.append(HelpOption(key, help=help_text, default=default, panel=panel,
                               metavar=metavar, flag=flag, required=required))
    return rows
