"""The package as a whole: no import cycles, counting the imports inside functions."""

import ast
from pathlib import Path

import django_autoembed

ROOT = Path(django_autoembed.__file__).parent


def _imports(tree: ast.AST) -> list[ast.ImportFrom]:
    """Every ``from ... import`` of a module, inside functions too; not those under ``if
    TYPE_CHECKING:``, which never run."""
    found: list[ast.ImportFrom] = []

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    walk(other)
                continue
            if isinstance(child, ast.ImportFrom):
                found.append(child)
            walk(child)

    walk(tree)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {
        ".".join(p.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in ROOT.rglob("*.py")
        if "migrations" not in p.parts
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = graph.setdefault(name, set())
        for node in _imports(ast.parse(path.read_text())):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif (node.module or "").startswith("django_autoembed"):
                target = node.module or ""
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                deps.add(sub if sub in modules else target)
    return {name: {d for d in deps if d in modules and d != name} for name, deps in graph.items()}


def test_the_package_has_no_import_cycles_not_even_through_functions():
    graph = _graph()
    assert "django_autoembed.pipeline.run" in graph  # the walk found the package's modules
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        assert state.get(name) != 1, " -> ".join([*trail, name])
        state[name] = 1
        for dep in graph[name]:
            visit(dep, [*trail, name])
        state[name] = 2

    for name in graph:
        visit(name, [])
