"""The shape of navai_core, checked from its source (docs/architecture.md, "Shape").

- No ``global`` statement anywhere in navai_core.
- No module-level mutable state (the rule: :func:`test_no_module_level_mutable_state`).
- No class over 300 lines.
- At most 12 modules at the top of navai_core (the facade and the small shared pieces; every
  other part is a subpackage).
- No import circle among navai_core's modules, counting every import in a module: at the top,
  under ``if TYPE_CHECKING:``, and inside functions (a lazy import hides a circle, it does not
  remove one).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "navai_core"
MAX_CLASS_LINES = 300
MAX_TOP_MODULES = 12

# Calls that make a mutable container or a piece of shared state (matched by the callee's
# last name: ``threading.local()`` and ``local()`` alike).
MUTABLE_FACTORIES = frozenset(
    {
        "dict",
        "list",
        "set",
        "bytearray",
        "defaultdict",
        "OrderedDict",
        "Counter",
        "deque",
        "ChainMap",
        "ConfigDict",  # pydantic's: a TypedDict, so a plain dict
        "local",
        "WeakKeyDictionary",
        "WeakValueDictionary",
        "WeakSet",
        "Queue",
        "SimpleQueue",
        "LifoQueue",
        "PriorityQueue",
        "Lock",
        "RLock",
        "Condition",
        "Event",
        "Semaphore",
        "BoundedSemaphore",
        "Future",
        "ContextVar",
        "ThreadPoolExecutor",
        "count",
    }
)
# Calls that keep the display they are given read-only (or copy it into something
# immutable): a display passed to one of them is fine if nothing mutable is nested in it.
FREEZERS = frozenset({"MappingProxyType", "frozenset", "tuple"})
DISPLAYS = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)


def core_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of navai_core."""
    modules = {}
    for path in sorted(CORE.rglob("*.py")):
        parts = path.relative_to(CORE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def module_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements a module runs at import: its body, and the bodies of its top-level
    ``if``/``try``/``with`` blocks (not functions or classes)."""
    for node in body:
        yield node
        if isinstance(node, ast.If):
            yield from module_level(node.body)
            yield from module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from module_level(block)
            for handler in node.handlers:
                yield from module_level(handler.body)
        elif isinstance(node, ast.With):
            yield from module_level(node.body)


def callee(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def walk(node: ast.AST) -> Iterator[ast.AST]:
    """``ast.walk`` without descending into lambdas (a display in a lambda is made fresh at
    each call) or subscripts (``Callable[[int], str]`` is a type, not a list)."""
    yield node
    if not isinstance(node, (ast.Lambda, ast.Subscript)):
        for child in ast.iter_child_nodes(node):
            yield from walk(child)


def has_display(node: ast.AST) -> bool:
    return any(isinstance(inner, DISPLAYS) for inner in walk(node))


def mutable_value(value: ast.expr) -> str | None:
    """Why ``value`` (bound to a module-level name) is mutable state, or None."""
    if isinstance(value, DISPLAYS):
        return f"a {type(value).__name__} display"
    for node in walk(value):
        if isinstance(node, DISPLAYS) and node is not value and not _inside_call(value, node):
            return f"a {type(node).__name__} display inside it"
    if isinstance(value, ast.Call):
        name = callee(value)
        if name in MUTABLE_FACTORIES:
            return f"a call of {name}()"
        arguments = [*value.args, *(keyword.value for keyword in value.keywords)]
        for argument in arguments:
            if name in FREEZERS and isinstance(argument, DISPLAYS):
                for inner in walk(argument):
                    nested = inner is not argument and isinstance(inner, DISPLAYS)
                    if nested and not _inside_call(argument, inner):
                        return f"a mutable display nested in {name}(...)"
            elif has_display(argument):
                return f"a mutable display kept by {name or 'a call'}(...)"
    return None


def _inside_call(root: ast.expr, node: ast.AST) -> bool:
    """Whether ``node`` is an argument (at any depth) of a call within ``root`` (the call's
    own rules judge it)."""
    for call in walk(root):
        if isinstance(call, ast.Call):
            for argument in [*call.args, *(keyword.value for keyword in call.keywords)]:
                if any(inner is node for inner in walk(argument)):
                    return True
    return False


def test_no_global_statement() -> None:
    found = [
        f"{path.relative_to(CORE.parent)}:{node.lineno}"
        for path in core_modules().values()
        for node in ast.walk(parse(path))
        if isinstance(node, ast.Global)
    ]
    assert not found, f"`global` in navai_core: {found}"


def test_no_module_level_mutable_state() -> None:
    """No name bound at module level in navai_core holds mutable state.

    The rule, read from the source (assignments a module runs at import, outside functions
    and classes, ``__all__`` excepted): the value may not be

    - a list, dict or set display or comprehension, or contain one (a tuple of dicts too);
    - a call of a factory of mutable containers or shared state (``dict()``, ``set()``,
      ``threading.local()``, ``WeakKeyDictionary()``, ``defaultdict``, ``deque``, queues,
      locks, events, futures, ``ContextVar``, pydantic's ``ConfigDict``: ``MUTABLE_FACTORIES``);
    - any other call given a list/dict/set display (``Reply(200, {...})`` keeps the dict),
      except ``MappingProxyType``, ``frozenset`` and ``tuple``, which keep it read-only (or
      copy it) as long as no display is nested in it (other than as the argument of a call
      that builds a value from it).

    Allowed: constants, tuples and frozensets of constants, ``MappingProxyType`` tables,
    compiled regexes, loggers, ``TypeVar``s, sentinels (``object()``), and instances of
    frozen classes (settings rows such as ``Provider(...)``). Per-server state belongs to
    an object a ``Navai`` owns and passes down.
    """
    found = []
    for path in core_modules().values():
        for node in module_level(parse(path).body):
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
                targets = [node.target]
            else:
                continue
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if names == ["__all__"]:
                continue
            assert node.value is not None
            why = mutable_value(node.value)
            if why is not None:
                where = f"{path.relative_to(CORE.parent)}:{node.lineno}"
                found.append(f"{where} {', '.join(names) or '?'}: {why}")
    assert not found, "module-level mutable state in navai_core:\n" + "\n".join(found)


def test_the_rule_catches_what_it_names() -> None:
    """The mutable-state rule flags the shapes it forbids and passes the ones it allows."""
    flagged = [
        "x = {}",
        "x = []",
        "x = {1}",
        "x = {k: 1 for k in 'ab'}",
        "x = dict()",
        "x = threading.local()",
        "x = weakref.WeakKeyDictionary()",
        "x = collections.defaultdict(list)",
        "x = Reply(200, {'ok': True})",
        "x = ({'a': 1},)",
        "x = MappingProxyType({'a': {'b': 1}})",
        "x = pydantic.ConfigDict(extra='ignore')",
    ]
    allowed = [
        "x = 1",
        "x = ('a', 'b')",
        "x = frozenset({'a', 'b'})",
        "x = MappingProxyType({'a': 1})",
        "x = MappingProxyType({p.name: p for p in ROWS})",
        "x = re.compile('a+')",
        "x = logging.getLogger('navai')",
        "x = TypeVar('T')",
        "x = object()",
        "x = Provider(name='openai', paths=('a', 'b'))",
    ]
    for source in flagged:
        value = parse_value(source)
        assert mutable_value(value) is not None, source
    for source in allowed:
        value = parse_value(source)
        assert mutable_value(value) is None, source


def parse_value(source: str) -> ast.expr:
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.Assign)
    return node.value


def test_no_class_over_300_lines() -> None:
    found = []
    for path in core_modules().values():
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    found.append(f"{path.relative_to(CORE.parent)}:{node.name} {lines} lines")
    assert not found, f"classes over {MAX_CLASS_LINES} lines: {found}"


def test_at_most_12_modules_at_the_top() -> None:
    top = sorted(path.name for path in CORE.glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top
    for package in (p for p in CORE.iterdir() if p.is_dir() and p.name != "__pycache__"):
        if any(package.glob("*.py")):
            assert (package / "__init__.py").is_file(), f"{package.name} is no package"


def resolve(module: str, is_package: bool, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The dotted names an import statement in ``module`` refers to (absolute; for ``from X
    import y`` both ``X`` and ``X.y``, of which the caller keeps the modules that exist)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_targets(
    module: str, is_package: bool, node: ast.ImportFrom | ast.Import, modules: dict[str, Path]
) -> set[str]:
    """The navai_core modules an import statement loads by name: ``from X import y`` is an
    edge to ``X.y`` when that is a module, else to ``X``. (The parent packages a submodule
    import also runs are not counted: a package's ``__init__`` would then be in every
    circle.)"""
    names = resolve(module, is_package, node)
    if isinstance(node, ast.Import):
        return {name for name in names if name in modules}
    base, members = names[0], names[1:]
    targets = {member for member in members if member in modules}
    if len(targets) < len(members) and base in modules:
        targets.add(base)
    return targets


def import_graph() -> dict[str, set[str]]:
    """navai_core module -> the navai_core modules it imports (anywhere in its file)."""
    modules = core_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(parse(path)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[name] |= import_targets(name, is_package, node, modules) - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle() -> None:
    graph = import_graph()
    # the graph is real: the facade reaches the routes, the routes the calls
    assert "navai_core.routes.walk" in graph["navai_core._navai"]
    assert "navai_core.calls.phone" in graph["navai_core.routes.table"]
    found = cycles(graph)
    assert not found, f"import circles in navai_core: {found}"


def test_the_cycle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# ----- docs/architecture.md names only what exists ------------------------------------------

REPO = CORE.parent
ARCHITECTURE = REPO / "docs" / "architecture.md"
ROOTS = (REPO, CORE, REPO / "navai_adapters", REPO / "tests")
PATH_TOKEN = re.compile(r"`([\w./-]+(?:\.py|\.md|/))`")


def _exists(token: str) -> bool:
    """A path from the repository, navai_core, navai_adapters or tests; a bare file name
    (``server.py`` in a paragraph about tests/fakes/) when a file of that name exists."""
    if "/" not in token:
        places = (CORE, REPO / "navai_adapters", REPO / "tests", REPO / "benchmarks")
        return any(any(root.rglob(token)) for root in places)
    return any((root / token).exists() for root in ROOTS)


def defined_names(path: Path) -> set[str]:
    """Top-level names of a module, and ``Class.member`` for its classes' members."""
    names: set[str] = set()
    for node in parse(path).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                for member in node.body:
                    if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        names.add(f"{node.name}.{member.name}")
                    elif isinstance(member, ast.AnnAssign) and isinstance(member.target, ast.Name):
                        names.add(f"{node.name}.{member.target.id}")
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def test_every_path_the_architecture_page_names_exists() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    tokens = set(PATH_TOKEN.findall(text))
    assert "navai_core/routes/walk.py" in tokens  # the pattern finds the page's paths
    missing = sorted(token for token in tokens if not _exists(token))
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"


def test_the_layout_lists_every_module_and_only_modules_that_exist() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    layout = text.split("## Layout", 1)[1].split("```", 2)[1]
    named = set(re.findall(r"\b(\w+\.py)\b", layout))
    files = {path.name for root in (CORE, REPO / "navai_adapters") for path in root.rglob("*.py")}
    assert not named - files, f"the layout names modules that do not exist: {named - files}"
    unlisted = sorted(
        str(path.relative_to(REPO))
        for path in CORE.rglob("*.py")
        if path.name != "__init__.py" and path.name not in named
    )
    assert not unlisted, f"navai_core modules missing from the layout: {unlisted}"
    folders = {p.name for p in CORE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert {f for f in folders if f"{f}/" not in layout} == set()


def test_every_rule_row_points_at_a_function_of_its_module() -> None:
    """Each row of "Where each rule lives": `path` (`name`, ...) — every name is defined in
    that module (a function, class, constant, or `Class.member`)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    table = text.split("## Where each rule lives", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`navai_core" in line]
    assert len(rows) >= 30
    wrong = []
    for row in rows:
        where = row.rsplit("|", 2)[1]
        pairs = re.findall(r"`([\w/]+\.py)` \(([^)]*)\)", where)
        assert pairs, row
        for module, names in pairs:
            path = REPO / module
            if not path.is_file():
                wrong.append(f"{module}: no such module")
                continue
            defined = defined_names(path)
            for name in re.findall(r"`([\w.]+)`", names):
                if name not in defined:
                    wrong.append(f"{module}: no {name}")
    assert not wrong, f"rule rows that point at nothing: {wrong}"
