"""The package's shape, read from its source (docs/architecture.md): no import cycle between its
modules (imports inside functions count), no import of its own modules inside functions outside
`ppmobilenet/cli/`, the one `os.replace` (ppmobilenet.io's), and every import going down the
layers the architecture page draws."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "ppmobilenet")

# docs/architecture.md, "Allowed import directions": a part may import the parts of a lower rank
RANK = {"errors": 0, "io": 0, "board": 0, "cpu": 0, "models": 1, "data": 1, "weights": 2, "config": 2,
        "kernels": 3, "deploy": 4, "engine": 4, "bench": 5, "cli": 6}
# the two the page names: models re-exports the fluid loader (weights.fluid needs nothing of
# models), and `python -m ppmobilenet.config` is a command (its `__main__` block uses cli's parser)
EXCEPTIONS = {("ppmobilenet.models", "ppmobilenet.weights.fluid"), ("ppmobilenet.config", "ppmobilenet.cli.common")}
# the bottom row imports nothing of ours but io (io itself nothing)
BOTTOM_MAY_IMPORT = {"errors": {"io"}, "board": {"io"}, "cpu": {"io"}, "io": set()}


def _modules():
    """{dotted name: path} of every module of the package (a package is its __init__)."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].split(os.sep)
                found[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = os.path.join(folder, f)
    return found


MODULES = _modules()


def _imports(name, path):
    """-> [(imported own module, line, inside a function)] of one module. `from X import y`
    names module X.y where that is a module, else X."""
    tree = ast.parse(open(path).read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[:len(package.split(".")) - child.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in child.names]
            found.extend((t, child.lineno, in_function) for t in targets if t.split(".")[0] == "ppmobilenet")
            visit(child, inner)
    visit(tree, False)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _part(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(top)"


def test_the_source_is_read():
    # the reading itself can fail quietly: it must see the package's real shape
    assert len(MODULES) > 80 and "ppmobilenet.engine.trainer" in MODULES
    assert ("ppmobilenet.data", ) == tuple({t for t, _, _ in GRAPH["ppmobilenet.deploy.int8"]
                                            if t.startswith("ppmobilenet.data")})
    assert any(f for _, _, f in GRAPH["ppmobilenet.cli.train"]), "cli imports the package inside functions"


def test_no_import_cycles():
    edges = {m: sorted({t for t, _, _ in deps if t in MODULES and t != m}) for m, deps in GRAPH.items()}
    cycles, state = [], {}

    def walk(m, stack):
        state[m] = "open"
        for t in edges[m]:
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                walk(t, stack + [t])
        state[m] = "done"
    for m in sorted(edges):
        if m not in state:
            walk(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_own_modules_are_imported_at_the_top_outside_cli():
    inside = [f"{MODULES[m]}:{line}: {t}" for m, deps in GRAPH.items() if _part(m) != "cli"
              for t, line, in_function in deps if in_function]
    assert not inside, "imports of the package's own modules inside functions:\n" + "\n".join(inside)


def test_imports_go_down_the_layers():
    wrong = []
    for m, deps in GRAPH.items():
        src = _part(m)
        for t, line, _ in deps:
            dst = _part(t)
            if src == dst or src == "(top)" or dst == "(top)" or (m, t) in EXCEPTIONS:
                continue
            ok = dst in BOTTOM_MAY_IMPORT[src] if src in BOTTOM_MAY_IMPORT else RANK[dst] < RANK[src]
            if not ok:
                wrong.append(f"{MODULES[m]}:{line}: {src} imports {dst} ({t})")
    assert not wrong, "imports against docs/architecture.md's layers:\n" + "\n".join(wrong)


def test_one_os_replace():
    sites = [f"{os.path.relpath(path, ROOT)}:{node.lineno}" for path in MODULES.values()
             for node in ast.walk(ast.parse(open(path).read(), path))
             if isinstance(node, ast.Attribute) and ast.unparse(node) == "os.replace"]
    assert len(sites) == 1 and sites[0].startswith("ppmobilenet/io.py:"), \
        f"os.replace outside ppmobilenet.io.replace_atomic: {sites}"
