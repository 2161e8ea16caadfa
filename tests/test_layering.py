"""The package layering and the absence of import cycles, read from the source (every import, also those
inside functions): ofa_core imports nothing of ours; device_profiles only ofa_core; profiler and predictors only
those two; the CLI modules (ofakit.commands) are imported by nothing but the CLI; tests and bench scripts use
the library."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("ofa_core", "device_profiles", "profiler", "predictors")  # installed as ofakit.<folder>
PACKAGES = (*LIBRARIES, "ofakit")
ALLOWED = {"ofa_core": set(), "device_profiles": {"ofa_core"}, "profiler": {"ofa_core", "device_profiles"},
           "predictors": {"ofa_core", "device_profiles"}}


def module_name(path: Path, root: Path = ROOT) -> str:
    """The module's installed name (``ofa_core/space.py`` -> ``ofakit.ofa_core.space``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join(["ofakit", *parts] if parts[0] in LIBRARIES else parts)


def layer(module: str) -> str:
    """``ofa_core`` for ``ofakit.ofa_core.space``, ``ofakit`` for ``ofakit.cli``."""
    parts = module.split(".")
    return parts[1] if parts[0] == "ofakit" and len(parts) > 1 and parts[1] in LIBRARIES else parts[0]


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """{module: modules of ours it imports anywhere in its source}."""
    files = {module_name(p, root): p for pkg in PACKAGES for p in (root / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            edges |= {n for n in names if n in files and n != mod}
        graph[mod] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_packages_import_only_the_layers_below():
    bad = [(m, d) for m, deps in import_graph().items() for d in deps
           if layer(m) in ALLOWED and layer(d) not in ALLOWED[layer(m)] | {layer(m)}]
    assert bad == []


def test_everything_is_imported_under_the_ofakit_namespace():
    """Only ``ofakit`` lands in site-packages: no file imports a library folder by its bare name."""
    files = [p for d in (*PACKAGES, "tests", "bench") for p in (ROOT / d).rglob("*.py")]
    bad = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] in LIBRARIES]
    assert bad == []


def test_only_the_cli_imports_the_command_modules():
    graph = import_graph()
    users = {m for m, deps in graph.items() for d in deps if d.startswith("ofakit.commands")}
    assert users <= {"ofakit.cli"} | {m for m in graph if m.startswith("ofakit.commands")}
    scripts = list((ROOT / "tests").glob("*.py")) + list((ROOT / "bench").glob("*.py"))
    assert [p.name for p in scripts if "ofakit.commands" in p.read_text(encoding="utf-8")
            and p.name != "test_layering.py"] == []
