"""Code health: the modules of `tvmnas` import each other without a cycle (imports inside functions count too),
and the CLI is the only layer that imports the CLI."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tvmnas"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    # a package's __init__ importing its own submodules is how packages work, not a cycle between layers
    return {name: {t for t in deps if not t.startswith(name + ".")} for name, deps in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_the_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_only_the_cli_imports_the_cli():
    graph = import_graph()
    offenders = [name for name, deps in graph.items()
                 if not name.startswith("tvmnas.cli") and any(d.startswith("tvmnas.cli") for d in deps)]
    assert offenders == []


def test_measuring_knows_no_model():
    """measure/ compiles and times any module it is given: building networks (and folding their BatchNorm) is the
    callers' part, so a change to the model's blocks cannot change how anything is measured."""
    graph = import_graph()
    offenders = [f"{name} -> {dep}" for name, deps in graph.items() if name.startswith("tvmnas.measure")
                 for dep in deps if dep.startswith("tvmnas.model")]
    assert offenders == []


def test_benches_use_the_product_not_the_tests():
    bench = PACKAGE.parent / "bench"
    offenders = []
    for path in bench.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{path.name}: {n}" for n in names if n == "tests" or n.startswith("tests.")]
    assert offenders == []


RUN_FILE_NAMES = {"config.json", "checkpoint.pt", "log.jsonl", "arch.json", "probabilities.json", "summary.json",
                  "pareto.json", "settings.json", "network.pt", "manifest.json", "sample_input.npy", "model.so",
                  "model.onnx", "derived", "specialized"}
# the owners: a run folder's files (`tvmnas.run_folder`), a bundle's (`tvmnas.deploy.bundle`)
FILE_NAME_OWNERS = {PACKAGE / "run_folder.py", PACKAGE / "deploy" / "bundle.py"}


def test_run_folder_file_names_are_spelled_by_their_owners_only():
    """Every other module asks `tvmnas.run_folder` (or the bundle module) for a path: a string constant that is a
    run or bundle file name, anywhere else in the package or the benches, is an offender."""
    offenders = []
    for path in [*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "bench").glob("*.py")]:
        if path in FILE_NAME_OWNERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in RUN_FILE_NAMES:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value!r}")
    assert offenders == []
