"""The package's shape: no import cycle, nobody imports a front end, modules of a readable size
(a light ``import tmstarget``: ``tests/test_imports.py``).

The import graph is read from the source (``ast``), not by importing: every ``import`` and
``from ... import`` statement of every module of ``tmstarget`` (including the packages installed
from other folders, such as ``tmstarget.viewer`` from ``viewer/``), at module level or inside a
function, except under ``if TYPE_CHECKING:``.  A package's ``__init__`` is a node like any
module; the implicit import of parent packages is not an edge.
"""

import ast
import pkgutil
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "tmstarget"
#: Front ends: thin clients of the workflows and the API.  No module imports one, except the
#: command line, which dispatches its commands to them (``tmstarget watch``, ``tmstarget view``).
FRONT_ENDS = ("tmstarget.cli", "tmstarget.realtime.watch", "tmstarget.viewer")
DISPATCHER = "tmstarget.cli"
MAX_LINES = 600


def _package_dirs():
    """(package name, source folder) of ``tmstarget`` and of its packages kept elsewhere (package-dir)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    elsewhere = config["tool"]["setuptools"].get("package-dir", {})
    roots = [(PACKAGE, REPO / PACKAGE)]
    for name, folder in sorted(elsewhere.items()):
        if (REPO / folder / "__init__.py").is_file():
            roots.append((name, REPO / folder))
    return roots


def _walk(name, folder):
    """Every module below ``folder`` as {dotted name: source path}, without importing any."""
    found = {name: folder / "__init__.py"}
    for info in pkgutil.iter_modules([str(folder)]):
        child = f"{name}.{info.name}"
        if info.ispkg:
            found.update(_walk(child, folder / info.name))
        else:
            found[child] = folder / f"{info.name}.py"
    return found


def _modules():
    found = {}
    for name, folder in _package_dirs():
        found.update(_walk(name, folder))
    return found


MODULES = _modules()


def _is_type_checking(node):
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree):
    """Import statements of ``tree`` (any depth), skipping ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _known(dotted):
    """The module ``dotted`` names, or its longest prefix that is one of ours; None if not ours."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
            return candidate
    return None


def _imports(module, path):
    """{imported module of ours: first line number} for one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = {}
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            targets = [_known(alias.name) for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [_known(f"{base}.{alias.name}") or _known(base) for alias in node.names]
        for target in targets:
            if target is not None and target != module:
                out.setdefault(target, node.lineno)
    return out


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _find_cycle(graph):
    """One import cycle as a list of modules (first repeated at the end), or None."""
    state = {}  # module -> 1 while on the stack, 2 when done

    def visit(module, stack):
        state[module] = 1
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target, stack)
                if cycle:
                    return cycle
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [])
            if cycle:
                return cycle
    return None


def _describe(cycle):
    steps = [f"{a} (line {GRAPH[a][b]}) -> {b}" for a, b in zip(cycle, cycle[1:])]
    return "import cycle:\n  " + "\n  ".join(steps)


def test_walk_sees_the_package():
    assert {"tmstarget", "tmstarget.errors", "tmstarget.spaces", "tmstarget.cli.main"} <= set(MODULES)
    assert "tmstarget.errors" in GRAPH["tmstarget.spaces"]


def test_find_cycle_reports_one():
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert _find_cycle(graph) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b": 1}, "b": {}}) is None


def test_no_import_cycle():
    cycle = _find_cycle(GRAPH)
    assert cycle is None, _describe(cycle)


def _inside(module, package):
    return module == package or module.startswith(package + ".")


def test_nobody_imports_a_front_end():
    offenders = [
        f"{module} (line {line}) imports {target}"
        for module, targets in GRAPH.items()
        for target, line in targets.items()
        for front in FRONT_ENDS
        if _inside(target, front) and not _inside(module, front) and not _inside(module, DISPATCHER)
    ]
    # so neither the engine nor realtime/watch.py reaches into the CLI
    assert not offenders, "front ends are imported by nobody but the CLI:\n  " + "\n  ".join(offenders)


def test_module_size_or_a_stated_reason():
    too_long = []
    for module, path in MODULES.items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if not any(line.strip().startswith("Size:") for line in doc.splitlines()):
            too_long.append(f"{module}: {lines} lines")
    assert not too_long, (
        f"modules over {MAX_LINES} lines without a 'Size: <why>' line in their docstring:\n  "
        + "\n  ".join(too_long)
    )
