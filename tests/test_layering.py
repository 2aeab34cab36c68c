"""The package graph keeps the architecture honest: imports point one way, no module imports itself back through
another, no module reaches into another's private names, only backends import a framework, statistics stay in stats
and presentation in report. Read from the source with ast (every import counts, the lazy ones inside functions too),
so a test fails before a cycle bites at import time."""
import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "isobench"
FRAMEWORK_MODULES = ("torch", "tensorflow", "jax", "jaxlib", "keras", "flax", "optax")

# layer -> the layers it may import ("__init__" is isobench's own __init__: version and public API)
BASE = {"errors", "__init__", "_lazy"}
ALLOWED = {
    "errors": set(),
    "workloads": {"errors"},
    "data": {"errors", "workloads"},
    "results": {"errors", "measure"},  # measure: the contention rule a record's flag applies (stdlib only)
    "backends": {"errors", "data", "workloads", "results"},  # results: the FrameworkSettings record setup() returns
    "measure": BASE,
    "stats": BASE | {"results", "backends"},  # backends: its registry only (display order), see below
    "store": BASE | {"results"},
    "report": BASE | {"results", "stats", "backends", "workloads"},
    "config": BASE | {"backends", "data", "workloads", "measure", "results"},
    "runner": BASE | {"config", "backends", "data", "measure", "results", "stats", "workloads"},
    "_worker": BASE | {"measure", "runner"},
}
# what layers that only read results may see of backends: the registry, never a backend module
REGISTRY_ONLY = ("stats", "report", "store")


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def source(name: str, path: Path, node: ast.ImportFrom) -> str | None:
    """The absolute module a ``from ... import`` in module ``name`` reads from; ``None`` outside isobench."""
    if not node.level:
        return node.module if (node.module or "").startswith("isobench") else None
    package = (name if path.name == "__init__.py" else name.rsplit(".", 1)[0]).split(".")
    return ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))


def imports(name: str, path: Path) -> set[str]:
    """Every isobench module ``name`` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (target := source(name, path, node)):
            found |= {target} if node.module else {f"{target}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("isobench")}
    return found


def resolve(target: str, known: dict[str, Path]) -> str:
    """``isobench.x.y.NAME`` -> the module that defines it (``from .pkg import NAME`` names a symbol)."""
    while target not in known and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {resolve(t, known) for t in imports(name, path)} - {name} for name, path in known.items()}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1].removesuffix(".py") if len(parts) > 1 else "__init__"


def test_imports_point_one_way():
    upward = [f"{m} imports {t}" for m, targets in graph().items() for t in targets
              if layer(m) in ALLOWED and layer(t) != layer(m) and layer(t) not in ALLOWED[layer(m)]]
    assert not upward, "imports against the layering:\n" + "\n".join(sorted(upward))


def test_result_readers_see_only_the_backends_registry():
    wrong = [f"{m} imports {t}" for m, targets in graph().items() for t in targets
             if layer(m) in REGISTRY_ONLY and layer(t) == "backends" and t not in ("isobench.backends",)]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    g, state, cycles = graph(), {}, []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(path[path.index(nxt):] + [node, nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [node])
        state[node] = "done"

    for name in sorted(g):
        if name not in state:
            visit(name, [])
    # a package's __init__ re-exporting its own submodules is not a cycle unless the submodule imports it back
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def private_imports(name: str, path: Path) -> set[str]:
    """``isobench.module.NAME`` for every private name (a leading underscore; a dunder such as ``__version__`` is
    public) that module ``name`` imports from an isobench module, at module level or inside a function:
    ``from .x import _y``, ``from isobench.x import _y``."""
    return {f"{target}.{a.name}" for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)
            and (target := source(name, path, node)) for a in node.names
            if a.name.startswith("_") and not a.name.endswith("__")}


def test_no_module_imports_a_private_name_of_another():
    """A module's private names are its own: another module uses its public API (a backend's inference model, not
    its layer builder), so either can change its insides alone. Third-party privates are not isobench's to judge."""
    found = {name: private_imports(name, path) for name, path in modules().items()}
    wrong = sorted(f"{m} imports {t}" for m, ts in found.items() for t in ts)
    assert not wrong, "private names imported from another module:\n" + "\n".join(wrong)


def test_a_private_import_is_found_where_it_hides(tmp_path):
    code = ("from .x import _a, b\nfrom isobench.y import _c\nfrom . import __version__\nfrom numpy import _d\n"
            "def f():\n    from ..z import _e\n")
    (tmp_path / "m.py").write_text(code)
    assert private_imports("isobench.pkg.m", tmp_path / "m.py") == {
        "isobench.pkg.x._a", "isobench.y._c", "isobench.z._e"}


def test_only_backends_import_a_framework():
    offenders = []
    for name, path in modules().items():
        if layer(name) == "backends":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            offenders += [f"{name} imports {n}" for n in names if n.split(".")[0] in FRAMEWORK_MODULES]
    assert not offenders, "\n".join(offenders)


def test_no_statistics_in_report_and_no_presentation_in_stats():
    report = [p for p in (SRC / "report").rglob("*.py")]
    stats_calls = re.compile(r"\bscipy\b|np\.random|default_rng|\bbootstrap\w*\(|mannwhitney|mann_whitney|np\.percentile|np\.median")
    in_report = [f"{p.name}: {m.group(0)}" for p in report for m in stats_calls.finditer(p.read_text())]
    assert not in_report, "statistics computed in report/:\n" + "\n".join(in_report)
    stats = (SRC / "stats.py").read_text()
    presentation = re.compile(r"MiB|µs|\bms\b|faster|slower|#[0-9A-Fa-f]{6}\b|PyTorch|TensorFlow")
    found = sorted({m.group(0) for m in presentation.finditer(stats)})
    assert not found, f"presentation in stats.py: {found}"
