"""Imports point one way (README "Layers"): every module of the repository is parsed with ``ast``,
its imports (at any depth, in functions too, but not ``if TYPE_CHECKING:`` blocks, which never
run) become edges of a graph, and the graph must have no cycle and no edge from a lower layer to
a higher one.

Layers, lowest first (a module may import its own layer and the ones below):

0. facts    ``facts/`` (``k3sfleet.facts``): read a host, depend on pyinfra only
1. core     ``k3sfleet/*`` (settings, inventory, vault, kube, rolling, preflight ...)
2. deploys  ``deploys/*`` building blocks (``k3sfleet.deploys``): @deploy functions
3. entry    ``deploys/*`` entry files, the ones that run ``if under_pyinfra():`` (what people
            run with pyinfra or ``k3sfleet deploy``; each declares its ``PREFLIGHT``)
4. tools    ``k3sfleet/cli``, ``k3sfleet/__main__.py``, ``k3sfleet/lab``: commands, which may
            call anything below
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3sfleet.project import is_entry_file

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("facts", "core", "deploys", "entry", "tools")


def module_files() -> dict[str, Path]:
    """Every product module by dotted name (the symlinked folders under their package name)."""
    found: dict[str, Path] = {}
    for folder, package in (("k3sfleet", "k3sfleet"), ("deploys", "k3sfleet.deploys"),
                            ("facts", "k3sfleet.facts")):
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            if folder == "k3sfleet" and parts[0] in ("deploys", "facts", "templates"):
                continue  # the symlinks: read once, from the real folder
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from (n for child in node.orelse for n in (child, *_runtime_nodes(child)))
            continue
        yield node
        yield from _runtime_nodes(node)


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The product modules ``name`` imports when it runs."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in known else base)
    # `import a.b.c` names a.b.c; keep the deepest product module each import reaches
    edges = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name and target != "k3sfleet":
            edges.add(target)
    return edges


def layer_of(name: str, path: Path) -> str:
    if name.startswith("k3sfleet.facts"):
        return "facts"
    if name.startswith("k3sfleet.deploys"):
        return "entry" if is_entry_file(path) else "deploys"
    if name.startswith(("k3sfleet.cli", "k3sfleet.lab")) or name == "k3sfleet.__main__":
        return "tools"
    return "core"


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected component of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def upward_edges(graph: dict[str, set[str]]) -> list[str]:
    files = module_files()
    rank = {name: LAYERS.index(layer_of(name, path)) for name, path in files.items()}
    return sorted(
        f"{src} ({LAYERS[rank[src]]}) imports {dst} ({LAYERS[rank[dst]]})"
        for src, targets in graph.items() for dst in targets if rank[dst] > rank[src]
    )


def test_the_graph_sees_every_layer() -> None:
    graph = import_graph()
    files = module_files()
    layers = {layer_of(name, path) for name, path in files.items()}
    assert layers == set(LAYERS)
    assert "k3sfleet.deploys.common" in graph["k3sfleet.deploys.bootstrap"]
    assert "k3sfleet.settings" in graph["k3sfleet.inventory"]
    assert layer_of("k3sfleet.deploys.upgrade", files["k3sfleet.deploys.upgrade"]) == "entry"
    assert layer_of("k3sfleet.deploys.k3s_upgrade", files["k3sfleet.deploys.k3s_upgrade"]) == (
        "deploys")
    assert layer_of("k3sfleet.deploys.common", files["k3sfleet.deploys.common"]) == "deploys"


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_no_import_from_a_lower_layer_to_a_higher_one() -> None:
    assert upward_edges(import_graph()) == []


def test_the_checker_finds_a_cycle_and_an_upward_edge() -> None:
    graph = {"k3sfleet.a": {"k3sfleet.b"}, "k3sfleet.b": {"k3sfleet.a"}, "k3sfleet.c": set()}
    assert cycles(graph) == [["k3sfleet.a", "k3sfleet.b"]]
    assert upward_edges({"k3sfleet.settings": {"k3sfleet.deploys.common"}}) == [
        "k3sfleet.settings (core) imports k3sfleet.deploys.common (deploys)"
    ]


# -- entry files and building blocks (deploys/__init__.py) ---------------------------------------

DEPLOYS = ROOT / "deploys"
DECORATORS = ("deploy", "operation")


def _decorator_name(node: ast.expr) -> str | None:
    target = node.func if isinstance(node, ast.Call) else node
    return target.id if isinstance(target, ast.Name) else (
        target.attr if isinstance(target, ast.Attribute) else None)


def defined_deploys(tree: ast.Module) -> list[str]:
    """The module-level functions of ``tree`` decorated with ``@deploy`` or ``@operation``."""
    return [node.name for node in tree.body if isinstance(node, ast.FunctionDef)
            and any(_decorator_name(d) in DECORATORS for d in node.decorator_list)]


def module_level_operation_calls(tree: ast.Module) -> list[str]:
    """What a building block runs when it is imported: module-level statements other than
    imports, definitions, constant assignments and ``if TYPE_CHECKING:``, and any module-level
    call of one of its own deploys/operations or of a ``pyinfra.operations`` module."""
    operations = set(defined_deploys(tree)) | {
        alias.asname or alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
        and (node.module or "").startswith("pyinfra.operations") for alias in node.names}
    found = []
    for index, node in enumerate(tree.body):
        if index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            continue
        if not isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef,
                                 ast.Assign, ast.AnnAssign)):
            found.append(f"line {node.lineno}: {ast.unparse(node).splitlines()[0]}")
            continue
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            continue  # (decorators and default values are checked below only for calls)
        for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
            name = call.func
            while isinstance(name, ast.Attribute):
                name = name.value
            if isinstance(name, ast.Name) and name.id in operations:
                found.append(f"line {call.lineno}: {ast.unparse(call)}")
    return found


def entry_file_problems(name: str, path: Path) -> list[str]:
    """What an entry file lacks or has too much of (deploys/__init__.py says what one is)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree) or ""
    problems = [f"{name} defines @{d}" for d in defined_deploys(tree)]
    run = " ".join(doc.split()).partition("Entry file. Run: ")[2].partition("``")[2]
    if f"pyinfra inventory.py deploys/{name}.py" not in run.partition("``")[0]:
        problems.append(f"{name}: its docstring lacks 'Entry file. Run: ``pyinfra inventory.py "
                        f"deploys/{name}.py``'")
    if not any(isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "PREFLIGHT"
                                                 for t in n.targets) for n in tree.body):
        problems.append(f"{name} declares no PREFLIGHT")
    return problems


def test_deploys_lists_its_entry_files_and_building_blocks() -> None:
    import k3sfleet.deploys as deploys
    from k3sfleet.project import entry_names

    files = {p.stem: p for p in DEPLOYS.glob("*.py") if p.stem != "__init__"}
    entries = sorted(n for n, p in files.items() if is_entry_file(p))
    assert list(deploys.ENTRY_FILES) == entries == entry_names()
    assert sorted(deploys.BUILDING_BLOCKS) == sorted(set(files) - set(entries))


def test_entry_files_say_how_to_run_them_declare_preflight_and_define_no_deploy() -> None:
    import k3sfleet.deploys as deploys

    assert [p for name in deploys.ENTRY_FILES
            for p in entry_file_problems(name, DEPLOYS / f"{name}.py")] == []


def test_building_blocks_import_no_entry_file_and_run_nothing_when_imported() -> None:
    import k3sfleet.deploys as deploys

    graph = import_graph()
    entries = {f"k3sfleet.deploys.{name}" for name in deploys.ENTRY_FILES}
    blocks = [f"k3sfleet.deploys.{name}" for name in deploys.BUILDING_BLOCKS]
    assert [f"{b} imports {e}" for b in blocks for e in sorted(graph[b] & entries)] == []
    assert {name: calls for name in deploys.BUILDING_BLOCKS if (calls := (
        module_level_operation_calls(ast.parse((DEPLOYS / f"{name}.py").read_text())))
    )} == {}


def test_the_layout_checks_find_what_they_look_for() -> None:
    entry = ast.parse('''"""Does things."""
from pyinfra.api import deploy

@deploy("x")
def x(): pass

x()
''')
    assert defined_deploys(entry) == ["x"]
    assert module_level_operation_calls(entry) == ["line 7: x()"]
    block = ast.parse("from pyinfra.operations import files\nDONE = files.put(src='a', dest='b')\n"
                      "if True:\n    pass\n")
    assert module_level_operation_calls(block) == [
        "line 2: files.put(src='a', dest='b')", "line 3: if True:"]


def test_deploy_list_prints_each_entry_file_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import k3sfleet.deploys as deploys
    from k3sfleet.cli import main

    assert main(["--project-dir", str(tmp_path), "deploy", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(deploys.ENTRY_FILES)
    assert "bring up or converge the whole k3s cluster in one run." in "\n".join(lines).lower()
    assert all(len(line.split(None, 1)) == 2 for line in lines)  # a summary on each


if __name__ == "__main__":  # the measurement for the closing note
    g = import_graph()
    print("cycles:", cycles(g))
    print("upward edges:", *upward_edges(g), sep="\n  ")
