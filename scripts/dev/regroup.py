#!/usr/bin/env python
"""Regroup the core's flat top level into packages named for their jobs (issue 15).

    python scripts/dev/regroup.py            # move, rewrite, then check the result
    python scripts/dev/regroup.py --dry-run  # print what would move and change; touch nothing
    python scripts/dev/regroup.py --no-check # skip the closing import and import-graph checks
    python scripts/dev/regroup.py --root DIR # regroup another checkout (default: this one)

What it does, on whatever tree it runs in (it discovers the files; it keeps no list of them):

1. ``git mv`` every module of :data:`MOVES` to its new home (a package moves file by file;
   ``paddlellm/train/`` merges into ``paddlellm/training/``) and writes the new packages'
   ``__init__.py`` (docstring only: importing a package imports none of its modules).
2. Rewrites every reference to a moved module in the tracked and untracked, not ignored text
   files of the repository (Python, Markdown, TOML, YAML, cfg, shell, Makefile):

   * ``from``-imports, absolute and relative, at module level or inside functions, read with
     ``ast``: a relative import inside the core is resolved against the file's old package and
     written relative to its new one; ``from paddlellm import models`` becomes
     ``from paddlellm.modeling import prepare as models`` (the local name stays), and a
     statement whose names now live in different packages is split in two;
   * every dotted path ``paddlellm.old.name`` anywhere in the text (``import`` statements,
     attribute chains, ``"module:attr"`` targets of the registry and of lazy-export tables,
     ``monkeypatch`` strings, docstrings, docs), and file paths ``paddlellm/old/name.py``;
   * ``Path(__file__).parent`` in a module that moves one package down;
   * the ``LAYERS`` table of ``tests/test_import_graph.py``: a moved module's prefix becomes
     its new package's (``paddlellm.plugin``, ``paddlellm.modeling``, ``paddlellm.training``);
     a module that must stay in a higher layer than its package keeps its own prefix.
3. Prints what it moved and rewrote, reports any old name left, runs
   ``python -c "import paddlellm.api"`` (and resolves every public name of ``paddlellm.api``)
   and ``pytest tests/test_import_graph.py`` on this tree.

Running it again is a no-op: nothing is left to move and no old name is left to rewrite.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "paddlellm"
SELF = Path(__file__).resolve()
#: the repository regrouped: the checkout holding this script (else the current folder)
ROOT = next((p for p in SELF.parents if (p / "core" / PACKAGE / "__init__.py").is_file()),
            Path.cwd())
CORE = ROOT / "core"

#: old module -> new module; a package maps its whole subtree (longest match wins)
MOVES: tuple[tuple[str, str], ...] = (
    # the plugin host: registry, entry-point loading, run configuration, device, precision
    ("paddlellm.registry", "paddlellm.plugin.registry"),
    ("paddlellm.plugins", "paddlellm.plugin.manager"),
    ("paddlellm.config", "paddlellm.plugin.config"),
    ("paddlellm.paddlenlp_args", "paddlellm.plugin.paddlenlp_args"),
    ("paddlellm.device", "paddlellm.plugin.device"),
    ("paddlellm.precision", "paddlellm.plugin.precision"),
    ("paddlellm.doctor", "paddlellm.plugin.doctor"),
    ("paddlellm.builtin", "paddlellm.plugin.builtin"),
    # modeling: models, PEFT, generation, the kernel seams, KV caches
    ("paddlellm.auto", "paddlellm.modeling.auto"),
    ("paddlellm.models", "paddlellm.modeling.prepare"),
    ("paddlellm.peft", "paddlellm.modeling.peft"),
    ("paddlellm.generation", "paddlellm.modeling.generation"),
    ("paddlellm.attention", "paddlellm.modeling.attention"),
    ("paddlellm.linear", "paddlellm.modeling.linear"),
    ("paddlellm.kv_cache", "paddlellm.modeling.kv_cache"),
    ("paddlellm.kv_layout", "paddlellm.modeling.kv_layout"),
    ("paddlellm.engine.kv_manager", "paddlellm.modeling.kv_manager"),
    ("paddlellm.evaluation", "paddlellm.modeling.evaluation"),
    # training: the loop and its parts, the session, the stages, composition of a run
    ("paddlellm.train", "paddlellm.training"),
    ("paddlellm.run", "paddlellm.training.compose"),
)

#: new packages: their docstrings (written when the package has no ``__init__.py`` yet)
NEW_PACKAGES: dict[str, str] = {
    "paddlellm.plugin": (
        '"""The plugin host: the registry of every kind, entry-point loading and its checks\n'
        '(:mod:`.manager`), the run configuration (:mod:`.config`, PaddleNLP argument files in\n'
        ':mod:`.paddlenlp_args`), device parsing, the low-precision policy, ``llm doctor`` and the\n'
        'core\'s own plugin (:mod:`.builtin`: default selectors, built-in stages and commands).\n\n'
        'Importing this package imports none of its modules.\n"""\n'),
    "paddlellm.modeling": (
        '"""Modeling: ``AutoModelForCausalLM`` (:mod:`.auto`), a run\'s model (:mod:`.prepare`:\n'
        'built or loaded, prepared for training, saved; the bundled demo models), the PEFT front\n'
        'door (:mod:`.peft`), ``generate`` (:mod:`.generation`), the attention and linear kernel\n'
        'seams, KV-cache layouts and the paged pool (:mod:`.kv_cache`, :mod:`.kv_layout`,\n'
        ':mod:`.kv_manager`) and evaluation helpers.\n\n'
        'Importing this package imports none of its modules (and no Paddle).\n"""\n'),
}

#: the package each layer of tests/test_import_graph.py LAYERS is collapsed onto
LAYER_HOMES: dict[str, str] = {
    "paddlellm.plugin": "plugin host",
    "paddlellm.modeling": "modeling",
    "paddlellm.training": "training",
}
IMPORT_GRAPH_TEST = "tests/test_import_graph.py"

TEXT_SUFFIXES = {".py", ".md", ".toml", ".cfg", ".ini", ".txt", ".yaml", ".yml", ".sh", ".rst",
                 ".pyi"}
TEXT_NAMES = {"Makefile", "setup.py", "setup.cfg"}
SKIP_PARTS = {".git", "__pycache__", ".venv", ".venv-oracle", "build", "dist", "node_modules"}
MAX_BYTES = 2_000_000


def set_root(root: Path) -> None:
    """Regroup the repository at ``root`` (its core package in ``root/core``)."""
    global ROOT, CORE
    ROOT = root.resolve()
    CORE = ROOT / "core"
    if not (CORE / PACKAGE / "__init__.py").is_file():
        raise SystemExit(f"{CORE / PACKAGE} is not a package: is {ROOT} a paddlellm checkout?")


# --------------------------------------------------------------------------------------------
# module names

def map_module(name: str) -> str:
    """The new dotted name of ``name`` (itself when it does not move)."""
    best = None
    for old, new in MOVES:
        if (name == old or name.startswith(old + ".")) and (best is None or len(old) > len(best[0])):
            best = (old, new)
    return name if best is None else best[1] + name[len(best[0]):]


def module_of(path: Path) -> str | None:
    """The dotted module name of a ``.py`` file under ``core/`` (None elsewhere)."""
    try:
        rel = path.relative_to(CORE)
    except ValueError:
        return None
    parts = list(rel.with_suffix("").parts)
    if not parts or parts[0] != PACKAGE:
        return None
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def path_of(module: str, is_package: bool) -> Path:
    parts = module.split(".")
    return CORE.joinpath(*parts, "__init__.py") if is_package else CORE.joinpath(*parts[:-1], parts[-1] + ".py")


def core_modules() -> dict[str, Path]:
    return {m: p for p in sorted((CORE / PACKAGE).rglob("*.py"))
            if "__pycache__" not in p.parts and (m := module_of(p))}


# --------------------------------------------------------------------------------------------
# files

def git(*args: str, check: bool = True) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    if check and done.returncode:
        raise SystemExit(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def repository_files() -> list[Path]:
    """Tracked and untracked, not ignored files of the work tree."""
    names = git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    return sorted({ROOT / n for n in names if n and (ROOT / n).is_file()})


def is_text_file(path: Path) -> bool:
    if path.resolve() == SELF or SKIP_PARTS & set(path.relative_to(ROOT).parts):
        return False
    if path.suffix not in TEXT_SUFFIXES and path.name not in TEXT_NAMES:
        return False
    return path.stat().st_size <= MAX_BYTES


@dataclass
class Plan:
    moves: list[tuple[Path, Path]] = field(default_factory=list)     # src -> dst
    removals: list[Path] = field(default_factory=list)               # merged-away __init__.py
    new_inits: list[tuple[Path, str]] = field(default_factory=list)

    def destination(self, path: Path) -> Path:
        for src, dst in self.moves:
            if src == path:
                return dst
        return path


def only_docstring(path: Path) -> bool:
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
               and isinstance(n.value.value, str) for n in body)


def plan_moves(files: list[Path]) -> Plan:
    plan = Plan()
    existing = set(files)
    for old, new in MOVES:
        old_parts, new_parts = old.split("."), new.split(".")
        module_file = CORE.joinpath(*old_parts[:-1], old_parts[-1] + ".py")
        package_dir = CORE.joinpath(*old_parts)
        if module_file in existing:
            plan.moves.append((module_file, CORE.joinpath(*new_parts[:-1], new_parts[-1] + ".py")))
        elif package_dir.is_dir():
            for src in sorted(p for p in existing if package_dir in p.parents):
                rel = src.relative_to(package_dir)
                dst = CORE.joinpath(*new_parts, rel)
                if rel == Path("__init__.py") and (dst in existing):
                    if not only_docstring(src):
                        raise SystemExit(f"{src.relative_to(ROOT)} has code and would merge into "
                                         f"{dst.relative_to(ROOT)}: move that code by hand first")
                    plan.removals.append(src)
                    continue
                plan.moves.append((src, dst))
    for src, dst in plan.moves:
        if dst.exists() and dst not in {s for s, _ in plan.moves}:
            raise SystemExit(f"cannot move {src.relative_to(ROOT)}: {dst.relative_to(ROOT)} exists")
    for package, doc in NEW_PACKAGES.items():
        init = CORE.joinpath(*package.split("."), "__init__.py")
        if not init.exists():
            plan.new_inits.append((init, doc))
    return plan


# --------------------------------------------------------------------------------------------
# rewriting

def _dotted_pattern() -> re.Pattern[str]:
    olds = sorted((old for old, _ in MOVES), key=len, reverse=True)
    return re.compile(r"(?<![\w.])(" + "|".join(re.escape(o) for o in olds) + r")(?![\w])")


DOTTED = _dotted_pattern()


def _path_rules() -> list[tuple[re.Pattern[str], str]]:
    rules = []
    for old, new in sorted(MOVES, key=lambda m: len(m[0]), reverse=True):
        o, n = old.replace(".", "/"), new.replace(".", "/")
        rules.append((re.compile(r"(?<![\w.])" + re.escape(o) + r"\.py\b"), n + ".py"))
        rules.append((re.compile(r"(?<![\w.])" + re.escape(o) + r"(?=/)"), n))
    return rules


PATH_RULES = _path_rules()


def rewrite_dotted(text: str) -> str:
    def sub(match: re.Match[str]) -> str:
        # ``paddlellm.models.x``: the longest moved prefix decides (map_module does that)
        return map_module(match.group(1))

    text = DOTTED.sub(sub, text)
    for pattern, replacement in PATH_RULES:
        text = pattern.sub(replacement, text)
    return text


def _line_offsets(text: str) -> list[int]:
    offsets, total = [0], 0
    for line in text.splitlines(keepends=True):
        total += len(line)
        offsets.append(total)
    return offsets


def _relative(target: str, package: str) -> tuple[int, str]:
    """``target`` written relative to ``package``: (level, module)."""
    t, p = target.split("."), package.split(".")
    common = 0
    while common < min(len(t), len(p)) and t[common] == p[common]:
        common += 1
    return len(p) - common + 1, ".".join(t[common:])


def _render(level: int, module: str, names: list[tuple[str, str | None]], indent: str) -> str:
    head = "from " + "." * level + module + " import "
    items = [n if a is None else f"{n} as {a}" for n, a in names]
    line = head + ", ".join(items)
    if len(indent) + len(line) <= 100:
        return line
    body, lines, width = "", [], len(indent) + len(head) + 1
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else ")")
        if body and width + len(body) + 1 + len(piece) > 100:
            lines.append(body)
            body = piece
        else:
            body = f"{body} {piece}" if body else piece
    lines.append(body)
    return head + "(" + ("\n" + indent + " " * (len(head) + 1)).join(lines)


def rewrite_imports(text: str, old_module: str | None, new_module: str | None, is_package: bool,
                    modules: set[str]) -> str:
    """Rewrite the ``from``-imports of one Python source that name a moved core module.

    ``old_module``/``new_module``: the file's own dotted name before and after the move (None
    outside the core: relative imports there are a plugin's own and are left alone).
    ``modules``: every core module name, old and new (to tell ``from pkg import submodule``
    from ``from pkg import name``).
    """
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return text
    old_pkg = new_pkg = None
    if old_module is not None:
        old_pkg = old_module if is_package else old_module.rpartition(".")[0]
        new_pkg = new_module if is_package else new_module.rpartition(".")[0]
    moved_file = old_module is not None and old_module != new_module
    offsets = _line_offsets(text)
    edits: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            if old_pkg is None:
                continue
            parts = old_pkg.split(".")
            base_parts = parts[:len(parts) - node.level + 1]
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if base != PACKAGE and not base.startswith(PACKAGE + "."):
            continue
        groups: dict[str, list[tuple[str, str | None]]] = {}
        for alias in node.names:
            full = f"{base}.{alias.name}"
            if alias.name != "*" and full in modules:
                new_full = map_module(full)
                parent, _, last = new_full.rpartition(".")
                asname = alias.asname or (alias.name if last != alias.name else None)
                groups.setdefault(parent, []).append((last, asname))
            else:
                groups.setdefault(map_module(base), []).append((alias.name, alias.asname))
        original = [(a.name, a.asname) for a in node.names]
        if not moved_file and list(groups) == [base] and groups[base] == original:
            continue
        start = offsets[node.lineno - 1] + node.col_offset
        end = offsets[node.end_lineno - 1] + node.end_col_offset
        segment = text[start:end]
        line_start = offsets[node.lineno - 1]
        indent = text[line_start:start]
        if indent.strip():
            raise SystemExit(f"cannot rewrite an import that does not start its line: {segment!r}")

        def where(target: str) -> tuple[int, str]:
            if node.level:
                return _relative(target, new_pkg)
            return 0, target

        if len(groups) == 1 and next(iter(groups.values())) == original:
            level, module = where(next(iter(groups)))
            head = re.match(r"from\s+[.\w]*\s+import", segment)
            new_segment = f"from {'.' * level}{module} import" + segment[head.end():]
            first_line = (indent + new_segment).split("\n")[0]
            if new_segment != segment and "#" not in segment and (
                    "\n" in segment or len(first_line) > 100):
                # re-wrap: continuation lines stay aligned with the parenthesis
                new_segment = _render(level, module, original, indent)
        else:
            new_segment = ("\n" + indent).join(
                _render(*where(target), names, indent) for target, names in groups.items())
        if new_segment != segment:
            edits.append((start, end, new_segment))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


FILE_PARENT = re.compile(r"Path\(__file__\)((?:\.resolve\(\))?)\.parent(?!s)")
FILE_PARENTS = re.compile(r"Path\(__file__\)((?:\.resolve\(\))?)\.parents\[(\d+)\]")


def fix_file_paths(text: str, depth_change: int) -> str:
    """``Path(__file__).parent`` of a module that moved ``depth_change`` packages down."""
    if depth_change <= 0:
        return text
    text = FILE_PARENTS.sub(lambda m: f"Path(__file__){m.group(1)}.parents[{int(m.group(2)) + depth_change}]",
                            text)
    return FILE_PARENT.sub(lambda m: f"Path(__file__){m.group(1)}.parents[{depth_change}]", text)


MD_PYTHON_BLOCK = re.compile(r"(^```(?:python|py)[^\n]*\n)(.*?)(^```)", re.S | re.M)


def rewrite_markdown(text: str, modules: set[str]) -> str:
    def block(match: re.Match[str]) -> str:
        return match.group(1) + rewrite_imports(match.group(2), None, None, False, modules) + match.group(3)

    return rewrite_dotted(MD_PYTHON_BLOCK.sub(block, text))


# --------------------------------------------------------------------------------------------
# the LAYERS table of the import-graph test

def rewrite_layers(text: str) -> str:
    """Collapse moved prefixes onto their new package in ``LAYERS`` (after rewrite_dotted)."""
    tree = ast.parse(text)
    node = next((n for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                 and any(isinstance(t, ast.Name) and t.id == "LAYERS"
                         for t in (n.targets if isinstance(n, ast.Assign) else [n.target]))), None)
    if node is None:
        print(f"  ! {IMPORT_GRAPH_TEST}: no LAYERS table found; left as it is")
        return text
    layers = ast.literal_eval(node.value)
    names = [name for name, _ in layers]
    new_layers = []
    for index, (name, prefixes) in enumerate(layers):
        kept: list[str] = []
        for prefix in prefixes:
            home = next((pkg for pkg in LAYER_HOMES
                         if prefix == pkg or prefix.startswith(pkg + ".")), None)
            if home and LAYER_HOMES[home] in names and index <= names.index(LAYER_HOMES[home]):
                if index < names.index(LAYER_HOMES[home]):
                    continue  # now lives (and is listed) in its package's higher layer
                prefix = home
            if prefix not in kept:
                kept.append(prefix)
        new_layers.append((name, tuple(kept)))
    # a home package whose layer lists none of its modules yet gets its prefix there
    for pkg, layer in LAYER_HOMES.items():
        if layer in names and not any(p == pkg for _, ps in new_layers for p in ps):
            if any(p.startswith(pkg + ".") for _, ps in layers for p in ps) or (
                    CORE.joinpath(*pkg.split(".")).is_dir()):
                i = names.index(layer)
                new_layers[i] = (layer, (pkg, *new_layers[i][1]))
    if tuple(new_layers) == tuple(layers):
        return text
    lines = ["("]
    for name, prefixes in new_layers:
        head = f'    ("{name}", ('
        body = ", ".join(f'"{p}"' for p in prefixes) + ("," if len(prefixes) == 1 else "")
        entry = head + body + ")),"
        if len(entry) <= 100:
            lines.append(entry)
            continue
        current = head
        for i, p in enumerate(prefixes):
            piece = f'"{p}"' + (", " if i < len(prefixes) - 1 else ")),")
            if len(current) + len(piece.rstrip()) > 100:
                lines.append(current.rstrip())
                current = " " * len(head) + piece
            else:
                current += piece
        lines.append(current)
    lines.append(")")
    offsets = _line_offsets(text)
    start = offsets[node.value.lineno - 1] + node.value.col_offset
    end = offsets[node.value.end_lineno - 1] + node.value.end_col_offset
    return text[:start] + "\n".join(lines) + text[end:]


# --------------------------------------------------------------------------------------------

def check_exports_code() -> str:
    """Every public name of paddlellm.api resolves, and the core's own registered targets load."""
    return f"""
import paddlellm, paddlellm.api as api
assert paddlellm.__file__.startswith({str(CORE)!r}), paddlellm.__file__
for name in api.__all__:
    getattr(api, name)
manager = api.get_plugin_manager().__class__(entry_points=False, strict=True)
for entry in manager.registry.entries():
    entry.load()
print(f"paddlellm.api: {{len(api.__all__)}} public names resolve; the core's "
      f"{{len(manager.registry.entries())}} built-in registrations load")
"""


def run_checks() -> int:
    env = dict(os.environ)
    sources = [str(CORE)] + sorted(str(p.parent) for p in ROOT.glob("plugins/**/pyproject.toml"))
    env["PYTHONPATH"] = os.pathsep.join(sources + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    checks = [
        [sys.executable, "-c", "import paddlellm.api"],
        [sys.executable, "-c", check_exports_code()],
    ]
    if (ROOT / IMPORT_GRAPH_TEST).is_file():
        checks.append([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                       IMPORT_GRAPH_TEST])
    else:
        print(f"(no {IMPORT_GRAPH_TEST} in this tree: the import-graph check is skipped)")
    status = 0
    for command in checks:
        shown = " ".join(c if "\n" not in c else "<check_exports_code()>" for c in command)
        print(f"\n$ {shown}", flush=True)
        done = subprocess.run(command, cwd=ROOT, env=env)
        status = status or done.returncode
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    parser.add_argument("--no-check", action="store_true", help="skip the closing checks")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the repository to regroup (default: the one holding this script)")
    args = parser.parse_args()
    set_root(args.root)

    files = repository_files()
    plan = plan_moves(files)
    before = core_modules()
    modules = set(before) | {map_module(m) for m in before}
    packages = {m for m, p in before.items() if p.name == "__init__.py"}
    destination = dict(plan.moves)

    print("moves:" if plan.moves or plan.removals else "moves: none (already regrouped)")
    for src, dst in plan.moves:
        print(f"  {src.relative_to(ROOT)} -> {dst.relative_to(ROOT)}")
    for src in plan.removals:
        print(f"  {src.relative_to(ROOT)} (removed: only a docstring; its package merged)")
    for init, _ in plan.new_inits:
        print(f"  + {init.relative_to(ROOT)}")

    new_texts: dict[Path, str] = {}
    for path in files:
        if path in plan.removals or not is_text_file(path):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        new = text
        if path.suffix in (".py", ".pyi"):
            old_module = module_of(path)
            new_module = module_of(destination.get(path, path)) if old_module else None
            new = rewrite_imports(new, old_module, new_module,
                                  path.name == "__init__.py" and old_module in packages, modules)
            new = rewrite_dotted(new)
            if path in destination:
                depth = len(destination[path].relative_to(CORE).parts) - len(path.relative_to(CORE).parts)
                new = fix_file_paths(new, depth)
        elif path.suffix == ".md":
            new = rewrite_markdown(new, modules)
        else:
            new = rewrite_dotted(new)
        if path.relative_to(ROOT).as_posix() == IMPORT_GRAPH_TEST:
            new = rewrite_layers(new)
        if new != text:
            new_texts[path] = new

    print("rewritten:" if new_texts else "rewritten: none")
    for path, new in new_texts.items():
        old = path.read_text(encoding="utf-8").splitlines()
        changed = sum(1 for a, b in zip(old, new.splitlines()) if a != b) + abs(
            len(old) - len(new.splitlines()))
        print(f"  {path.relative_to(ROOT)} ({changed} line{'s' * (changed != 1)})")
    if args.dry_run:
        return 0

    for src, dst in plan.moves:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tracked = git("ls-files", "--error-unmatch", str(src), check=False).strip()
        if tracked:
            git("mv", str(src), str(dst))
        else:
            src.rename(dst)
    for src in plan.removals:
        git("rm", "-q", str(src))
    for init, doc in plan.new_inits:
        init.parent.mkdir(parents=True, exist_ok=True)
        init.write_text(doc, encoding="utf-8")
        git("add", str(init))
    for path, new in new_texts.items():
        destination.get(path, path).write_text(new, encoding="utf-8")
    # folders left with nothing but bytecode would import as empty namespace packages
    for src, _ in plan.moves + [(r, r) for r in plan.removals]:
        folder = src.parent
        while folder != CORE and folder.is_dir():
            rest = [p for p in folder.iterdir() if p.name != "__pycache__"]
            if rest:
                break
            for cache in folder.glob("__pycache__"):
                for f in cache.iterdir():
                    f.unlink()
                cache.rmdir()
            folder.rmdir()
            print(f"  - {folder.relative_to(ROOT)}/ (empty, removed)")
            folder = folder.parent

    left = []
    for path in repository_files():
        if is_text_file(path):
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            for match in DOTTED.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                left.append(f"{path.relative_to(ROOT)}:{line}: {match.group(1)}")
    if left:
        print("old names left (rewrite them by hand):")
        print("\n".join(f"  {entry}" for entry in left))
    return 0 if args.no_check else (run_checks() or (1 if left else 0))


if __name__ == "__main__":
    sys.exit(main())
