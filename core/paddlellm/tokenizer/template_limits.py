"""Bounded chat-template rendering: output size, value size, loop work and time, per render.

A chat template is code shipped with a checkpoint. Jinja's sandbox stops it from reaching
Python internals, but not from spending the machine: ``{{ 'a' * 1000000000 }}`` allocates a
gigabyte, two nested loops over ``range(100000)`` run 10^10 iterations. The environment built
here (:class:`LimitedSandboxedEnvironment`) enforces, for every render:

- **output**: the rendered text is streamed and rendering stops once it passes
  ``max_output_chars``;
- **values**: no string, list or tuple made by ``*``, ``+``, ``~``, ``%``, a filter, a method
  or a macro may be longer than ``max_output_chars`` (checked *before* the big allocations:
  repetition, padding widths, ``replace``, ``translate``, ``join``, ``sum``, ``batch``,
  format widths, ``lipsum``, ``tojson``), nor may the text of a list or dict turned into a
  string (output, ``~``, ``%``, ``format``, string filters); integers stay under
  ``MAX_INT_BITS`` bits (``**``, ``*``, ``+``);
- **work**: loop iterations plus calls (macros, methods, recursive loops) are counted against
  ``max_loop_iterations``; every expression written into any buffer (macro bodies and
  ``{% set %}`` blocks included) counts towards ``OUTPUT_WORK_FACTOR * max_output_chars``;
- **time**: ``max_seconds`` of wall time (checked at every iteration, call and output);
- **recursion**: a macro calling itself without end is stopped at Python's recursion limit.

Each breach raises :class:`TemplateLimitError`, which names the template and the limit.
The limits of the current render come from :func:`render_limits` (a context manager; the
server sets them per request) or default to :data:`DEFAULT_LIMITS`.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import itertools
import json
import re
import string
import time
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator

import jinja2
import jinja2.nodes as nodes
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, pass_context
from jinja2.visitor import NodeTransformer

__all__ = ["DEFAULT_LIMITS", "LimitedSandboxedEnvironment", "RenderLimits", "TemplateLimitError",
           "current_limits", "render_limits", "template_label"]

MAX_INT_BITS = 4096  # integers a template computes (``**``, ``*``); Python ints are unbounded
OUTPUT_WORK_FACTOR = 8  # all text written anywhere (macros, set blocks) vs the output limit
_TIME_CHECK_EVERY = 16


class TemplateLimitError(jinja2.exceptions.TemplateError):
    """A chat template went over one of its rendering limits (see the module docstring)."""


@dataclass(frozen=True)
class RenderLimits:
    """Per-render bounds of a chat template (see the module docstring)."""

    max_output_chars: int = 16_000_000
    max_loop_iterations: int = 1_000_000
    max_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.max_output_chars < 1 or self.max_loop_iterations < 1 or not self.max_seconds > 0:
            raise ValueError(f"chat-template limits must be positive, got {self}")


DEFAULT_LIMITS = RenderLimits()

_LIMITS: contextvars.ContextVar[RenderLimits] = contextvars.ContextVar("template_limits",
                                                                       default=DEFAULT_LIMITS)
_BUDGET: contextvars.ContextVar["_Budget | None"] = contextvars.ContextVar("template_budget",
                                                                         default=None)


def current_limits() -> RenderLimits:
    return _LIMITS.get()


@contextlib.contextmanager
def render_limits(limits: RenderLimits | None = None, **overrides: Any) -> Iterator[RenderLimits]:
    """Use ``limits`` (or the current ones with ``overrides``) for renders in this context."""
    chosen = replace(limits or _LIMITS.get(), **overrides)
    token = _LIMITS.set(chosen)
    try:
        yield chosen
    finally:
        _LIMITS.reset(token)


@functools.lru_cache(maxsize=64)
def template_label(source: str) -> str:
    """How errors name a template: a digest and its first characters."""
    digest = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    head = " ".join(source[:40].split())
    return f"chat template sha256:{digest} ({head!r}...)"


class _Budget:
    """The counters of one render."""

    def __init__(self, limits: RenderLimits, label: str):
        self.limits = limits
        self.label = label
        self.work = 0
        self.writes = 0
        self.written = 0
        self.output = 0
        self.deadline = time.monotonic() + limits.max_seconds

    def fail(self, what: str) -> TemplateLimitError:
        return TemplateLimitError(f"The {self.label} {what}; rendering was stopped.")

    def tick(self, n: int = 1) -> None:
        self.work += n
        if self.work > self.limits.max_loop_iterations:
            raise self.fail(f"ran more than {self.limits.max_loop_iterations} loop iterations "
                            f"and calls (limit max_loop_iterations)")
        if self.work % _TIME_CHECK_EVERY == 0:
            self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise self.fail(f"took more than {self.limits.max_seconds:g} s (limit max_seconds)")

    def size(self, value: Any, what: str = "a value") -> Any:
        """``value`` unchanged when its length is within the output limit."""
        if isinstance(value, (str, list, tuple, bytes, bytearray)) and len(value) > self.limits.max_output_chars:
            raise self.too_big(what, len(value))
        return value

    def too_big(self, what: str, length: int) -> TemplateLimitError:
        return self.fail(f"made {what} of {length} items, over the limit of "
                         f"{self.limits.max_output_chars} (limit max_output_chars)")

    def predict(self, length: int, what: str) -> None:
        """Refuse an operation whose result would have ``length`` items, before it runs."""
        if length > self.limits.max_output_chars:
            raise self.too_big(what, length)

    def wrote(self, n: int) -> None:
        self.written += n
        if self.written > OUTPUT_WORK_FACTOR * self.limits.max_output_chars:
            raise self.fail(f"wrote more than {OUTPUT_WORK_FACTOR * self.limits.max_output_chars} "
                            f"characters into its buffers ({OUTPUT_WORK_FACTOR} x max_output_chars)")
        self.writes += 1
        if self.writes % _TIME_CHECK_EVERY == 0 or n > 65536:
            self.check_time()

    def emitted(self, n: int) -> None:
        self.output += n
        if self.output > self.limits.max_output_chars:
            raise self.fail(f"rendered more than {self.limits.max_output_chars} characters "
                            f"(limit max_output_chars)")


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:  # outside :meth:`LimitedSandboxedEnvironment.bounded_render` (compile time)
        budget = _Budget(_LIMITS.get(), "chat template")
    return budget


_END = object()


def text_size(value: Any, limit: int) -> int:
    """About ``len(str(value))`` (an upper estimate for containers), computed without building
    the string and stopping as soon as it passes ``limit``."""
    if type(value) is str:
        return len(value)
    size = 0
    stack: list[Iterator] = [iter((value,))]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
            continue
        if isinstance(item, str):
            size += len(item) + 4
        elif isinstance(item, dict):
            size += 2
            stack.append(itertools.chain.from_iterable(item.items()))
        elif isinstance(item, Namespace):
            size += 12
            attrs = object.__getattribute__(item, "_Namespace__attrs")
            stack.append(itertools.chain.from_iterable(attrs.items()))
        elif isinstance(item, (list, tuple, set, frozenset)):
            size += 2
            stack.append(iter(item))
        elif isinstance(item, (bytes, bytearray)):
            size += 4 * len(item) + 3
        elif _is_int(item):
            size += item.bit_length() // 3 + 2
        else:
            size += 32
        if size > limit:
            return size
    return size


def _check_text(budget: "_Budget", value: Any, what: str) -> None:
    """Refuse turning ``value`` into a string longer than the limit (before it is built)."""
    if type(value) is not str:
        budget.predict(text_size(value, budget.limits.max_output_chars), what)


def _int_bits(value: Any) -> int:
    return value.bit_length() if isinstance(value, int) and not isinstance(value, bool) else 0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _repeat_size(left: Any, right: Any) -> int | None:
    """The length of ``left * right`` for sequence repetition, else ``None``."""
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple, bytes, bytearray)) and _is_int(times):
            return len(seq) * max(times, 0)
    return None


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_percent(budget: _Budget, fmt: str, args: Any) -> None:
    """``fmt % args``: no field width or precision over the limit."""
    values = args if isinstance(args, tuple) else (args,)
    star = False
    for width, precision in _PERCENT_SPEC.findall(fmt):
        for part in (width, precision):
            if part == "*":
                star = True
            elif part and int(part) > budget.limits.max_output_chars:
                budget.predict(int(part), "a %-format field")
    if star:
        for v in values:
            if _is_int(v):
                budget.predict(abs(v), "a %-format field")
    limit = budget.limits.max_output_chars
    args_size = sum(text_size(v, limit) for v in (values if not isinstance(args, dict) else args.values()))
    budget.predict(len(fmt) + args_size, "a %-formatted string")


def _check_format(budget: _Budget, fmt: str, args: tuple, kwargs: dict) -> None:
    """``fmt.format(...)``: no width or precision over the limit (nested fields included)."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format raises the same error
    for _, _, spec, _ in fields:
        for number in re.findall(r"\d+", spec or ""):
            budget.predict(int(number), "a format field")
        if spec and "{" in spec:
            for v in (*args, *kwargs.values()):
                if _is_int(v):
                    budget.predict(abs(v), "a format field")
    limit = budget.limits.max_output_chars
    budget.predict(len(fmt) * (1 + len(fields)) + sum(text_size(v, limit) for v in (*args, *kwargs.values())),
                   "a formatted string")


def _check_str_method(budget: _Budget, obj: str, name: str, args: tuple, kwargs: dict) -> None:
    if name in ("center", "ljust", "rjust", "zfill") and args and _is_int(args[0]):
        budget.predict(args[0], f"str.{name}() padding")
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if _is_int(size):
            budget.predict(len(obj) + obj.count("\t") * max(size, 0), "str.expandtabs()")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        old, new = args[0], args[1]
        hits = len(obj) + 1 if old == "" else obj.count(old)
        budget.predict(len(obj) + hits * (len(new) - len(old)), "str.replace()")
    elif name == "translate" and args and isinstance(args[0], dict):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        budget.predict(len(obj) * max(longest, 1), "str.translate()")
    elif name in ("format", "format_map"):
        _check_format(budget, obj, args, kwargs if name == "format" else dict(args[0]) if args else {})


# ------------------------------------------------------------------ internal filters
@pass_context
def _plm_out(context, value: Any) -> Any:
    """Every expression written into a buffer: counted (work and time)."""
    budget = _BUDGET.get() or _budget()
    if type(value) is not str:
        _check_text(budget, value, "the text of a value")
        value = str(value)  # what the output does with it anyway
    budget.wrote(len(value))
    return value


@pass_context
def _plm_text(context, value: Any) -> Any:
    """An operand of ``~``: its text within the limit before it is built."""
    if type(value) is not str:
        _check_text(_budget(), value, "the text of a value ('~')")
    return value


@pass_context
def _plm_iter(context, iterable: Any) -> Any:
    """Every ``for`` loop's iterable: one unit of work per item."""
    if isinstance(iterable, jinja2.Undefined) or iterable is None:
        return iterable
    return _counted(_budget(), iterable)


def _counted(budget: _Budget, iterable: Iterable) -> Iterator:
    for item in iterable:
        budget.tick()
        yield item


@pass_context
def _plm_size(context, value: Any) -> Any:
    """The result of ``a ~ b``: within the value limit."""
    return _budget().size(value, "a string with '~'")


class _Bounder(NodeTransformer):
    """Rewrites a parsed template so loops, outputs and ``~`` go through the budget."""

    @staticmethod
    def _wrap(node: nodes.Node, name: str) -> nodes.Filter:
        return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        node = self.generic_visit(node)
        node.iter = self._wrap(node.iter, "_plm_iter")
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        node = self.generic_visit(node)
        node.nodes = [self._wrap(child, "_plm_out") for child in node.nodes]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        node = self.generic_visit(node)
        node.nodes = [self._wrap(child, "_plm_text") for child in node.nodes]
        return self._wrap(node, "_plm_size")


# ------------------------------------------------------------------ checked filters
def _checked_filters(env: jinja2.Environment) -> dict:
    base = dict(env.filters)

    def center(value, width=80):
        if _is_int(width):
            _budget().predict(width, "the center filter's padding")
        return base["center"](value, width)

    def indent(s, width=4, first=False, blank=False):
        if _is_int(width):
            lines = str(s).count("\n") + 1
            _budget().predict(len(str(s)) + lines * max(width, 0), "the indent filter's output")
        elif isinstance(width, str):
            lines = str(s).count("\n") + 1
            _budget().predict(len(str(s)) + lines * len(width), "the indent filter's output")
        return base["indent"](s, width, first, blank)

    def format_(value, *args, **kwargs):
        if isinstance(value, str):
            _check_percent(_budget(), value, kwargs or tuple(args))
        return base["format"](value, *args, **kwargs)

    def replace_(eval_ctx, s, old, new, count=None):
        if isinstance(s, str) and isinstance(old, str) and isinstance(new, str):
            _check_str_method(_budget(), s, "replace", (old, new), {})
        return base["replace"](eval_ctx, s, old, new, count)

    def wordwrap(environment, s, width=79, break_long_words=True, wrapstring=None,
                 break_on_hyphens=True):
        sep = wrapstring if isinstance(wrapstring, str) else environment.newline_sequence
        _budget().predict(len(str(s)) * (1 + len(sep)), "the wordwrap filter's output")
        return base["wordwrap"](environment, s, width, break_long_words, wrapstring, break_on_hyphens)

    def batch(value, linecount, fill_with=None):
        if _is_int(linecount):
            _budget().predict(linecount, "a batch")
        return base["batch"](value, linecount, fill_with)

    def slice_(value, slices, fill_with=None):
        if _is_int(slices):
            _budget().predict(slices, "a slice list")
        return base["slice"](value, slices, fill_with)

    def join(eval_ctx, value, d="", attribute=None):
        items = list(value) if not isinstance(value, str) else value
        budget = _budget()
        budget.predict(len(items), "a joined list")
        limit = budget.limits.max_output_chars
        size = len(str(d)) * max(len(items) - 1, 0)
        for x in items:
            size += text_size(x, limit)
            if size > limit:
                break
        budget.predict(size, "the join filter's output")
        return base["join"](eval_ctx, items, d, attribute)

    def sum_(environment, iterable, attribute=None, start=0):
        items = list(iterable)
        if isinstance(start, (str, list, tuple)) or any(isinstance(x, (str, list, tuple)) for x in items[:1]):
            start_len = len(start) if isinstance(start, (str, list, tuple)) else 0
            _budget().predict(start_len + sum(len(x) for x in items if isinstance(x, (str, list, tuple))),
                              "a sum")
        return base["sum"](environment, items, attribute, start)

    sum_.jinja_pass_arg = base["sum"].jinja_pass_arg
    replace_.jinja_pass_arg = base["replace"].jinja_pass_arg
    wordwrap.jinja_pass_arg = base["wordwrap"].jinja_pass_arg
    join.jinja_pass_arg = base["join"].jinja_pass_arg
    checked = {"center": center, "indent": indent, "format": format_, "replace": replace_,
               "wordwrap": wordwrap, "batch": batch, "slice": slice_, "join": join, "sum": sum_,
               "tojson": tojson}
    for name in _STRING_FILTERS:  # filters that start with str(value)
        checked[name] = _text_first(checked.get(name, base[name]))
    return {**checked, "_plm_out": _plm_out, "_plm_iter": _plm_iter, "_plm_size": _plm_size,
            "_plm_text": _plm_text}


_STRING_FILTERS = ("string", "pprint", "upper", "lower", "title", "capitalize", "trim",
                   "striptags", "escape", "e", "forceescape", "urlencode", "urlize", "center",
                   "indent", "wordwrap", "truncate", "replace", "format", "wordcount", "safe",
                   "xmlattr")


def _text_first(fn):
    """``fn`` with its value argument's text checked first (after any context argument)."""
    skip = 1 if getattr(fn, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if len(args) > skip:
            _check_text(_budget(), args[skip], "the text of a filtered value")
        return fn(*args, **kwargs)

    if hasattr(fn, "jinja_pass_arg"):
        wrapper.jinja_pass_arg = fn.jinja_pass_arg
    return wrapper


def bounded_tojson(value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
                   sort_keys: bool = False) -> str:
    """``json.dumps`` as chat templates expect it (no HTML escaping), built chunk by chunk and
    stopped at the output limit; ``indent`` and separators of at most 64 characters."""
    budget = _budget()
    pad = len(indent) if isinstance(indent, str) else indent if _is_int(indent) else 0
    if pad > 64 or any(isinstance(p, str) and len(p) > 64 for p in (separators or ())):
        raise budget.fail("asked tojson for an indent or separator over 64 characters")
    encoder = json.JSONEncoder(ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                               sort_keys=sort_keys)
    chunks, size = [], 0
    for chunk in encoder.iterencode(value):
        size += len(chunk)
        if size > budget.limits.max_output_chars:
            raise budget.too_big("tojson output", size)
        chunks.append(chunk)
    return "".join(chunks)


def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    return bounded_tojson(value, ensure_ascii, indent, separators, sort_keys)


class LimitedSandboxedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with the per-render bounds of this module."""

    intercepted_binops = frozenset(["*", "**", "+", "%"])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters.update(_checked_filters(self))
        lipsum = self.globals["lipsum"]

        def checked_lipsum(n=5, html=True, min=20, max=100):
            if _is_int(n) and _is_int(max):
                _budget().predict(n * max * 16, "lipsum text")
            return lipsum(n, html, min, max)

        self.globals["lipsum"] = checked_lipsum

    def _parse(self, source, name, filename):
        return _Bounder().visit(super()._parse(source, name, filename))

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "+":  # the common case (templates build strings with '+'): fast path
            if type(left) is str and type(right) is str:
                if len(left) + len(right) > (_BUDGET.get() or _budget()).limits.max_output_chars:
                    _budget().predict(len(left) + len(right), "a concatenation ('+')")
                return left + right
        budget = _budget()
        if operator == "*":
            size = _repeat_size(left, right)
            if size is not None:
                budget.predict(size, "a repeated sequence ('*')")
            elif _int_bits(left) + _int_bits(right) > MAX_INT_BITS:
                raise budget.fail(f"multiplied integers over {MAX_INT_BITS} bits")
        elif operator == "**":
            if _is_int(left) and _is_int(right) and abs(left) > 1 and right > 0:
                if right * max(_int_bits(left) - 1, 1) > MAX_INT_BITS:
                    raise budget.fail(f"computed a power over {MAX_INT_BITS} bits")
        elif operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                budget.predict(len(left) + len(right), "a concatenation ('+')")
            elif max(_int_bits(left), _int_bits(right)) > MAX_INT_BITS:
                raise budget.fail(f"added integers over {MAX_INT_BITS} bits")
        elif operator == "%" and isinstance(left, str):
            _check_percent(budget, left, right)
        return super().call_binop(context, operator, left, right)

    def call(self, context, obj, /, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        if isinstance(obj, LoopContext) and args:  # a recursive loop: its items count too
            args = (_counted(budget, args[0]), *args[1:])
        target = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            _check_str_method(budget, owner, getattr(target, "__name__", ""), args, kwargs)
            if getattr(target, "__name__", "") == "join" and args:
                items = list(args[0])
                budget.predict(len(owner) * max(len(items) - 1, 0)
                               + sum(len(x) if isinstance(x, str) else 0 for x in items), "str.join()")
                args = (items, *args[1:])
        return budget.size(super().call(context, obj, *args, **kwargs), "a call's result")

    def bounded_render(self, template: jinja2.Template, label: str, context: dict,
                       chunks: list[str] | None = None) -> str:
        """Render ``template`` streamed under the current limits (the chunks are appended to
        ``chunks`` as they come, for whoever tracks offsets while rendering)."""
        budget = _Budget(_LIMITS.get(), label)
        token = _BUDGET.set(budget)
        chunks = [] if chunks is None else chunks
        try:
            for chunk in template.generate(**context):
                budget.emitted(len(chunk))
                chunks.append(chunk)
        except RecursionError:
            raise budget.fail("recursed too deeply") from None
        except MemoryError:
            raise budget.fail("ran out of memory") from None
        finally:
            _BUDGET.reset(token)
        return "".join(chunks)
