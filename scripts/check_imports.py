"""Keep the architecture the layout shows: a check run by ``make lint`` and the unit tests.

* The serving library (everything but ``research`` and ``cli``) never imports the research side.
* The command line (``eco_integrations.cli``) is a leaf: only ``eco_integrations.__main__`` imports it.
* The engine and its building blocks import no framework (LangChain, LlamaIndex, Starlette).
* No import cycles between modules, counting imports inside functions too.

Usage: ``python scripts/check_imports.py [PACKAGE_DIR]``; prints each violation, exits 1 if any.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "eco_integrations"
FRAMEWORKS = ("langchain", "langchain_core", "llama_index", "starlette", "uvicorn", "vllm")
# Modules allowed to import a framework: the skins and the gateway.
SKINS = (
    f"{PACKAGE}.langchain",
    f"{PACKAGE}.llama_index",
    f"{PACKAGE}.serving",
    f"{PACKAGE}.backends.vllm",
)


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(name: str, path: Path, is_package: bool) -> set[str]:
    """Every module ``path`` imports (top-level and inside functions), as absolute names."""
    found: set[str] = set()
    base = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                target = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.add(target)
            # `from pkg import sub` may name a submodule.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def graph(root: Path) -> dict[str, set[str]]:
    modules = {module_name(root, p): p for p in root.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        raw = imports_of(name, path, path.name == "__init__.py")
        # Importing a.b.c runs the __init__ of a.b too (the root package is always initialised
        # first, so it does not count).
        raw |= {".".join(m.split(".")[:i]) for m in raw for i in range(2, m.count(".") + 1)}
        internal = {m for m in raw if m in modules and m != name and not name.startswith(m + ".")}
        edges[name] = internal | {m for m in raw if m.split(".")[0] in FRAMEWORKS}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def violations(root: Path) -> list[str]:
    edges = graph(root)
    research, cli = f"{PACKAGE}.research", f"{PACKAGE}.cli"
    problems = []
    for module, targets in sorted(edges.items()):
        in_research = module == research or module.startswith(research + ".")
        for target in sorted(targets):
            if (
                not in_research
                and module != cli
                and (target == research or target.startswith(research + "."))
            ):
                problems.append(
                    f"{module} imports {target}: the library must not import the research side"
                )
            if target == cli and module != f"{PACKAGE}.__main__":
                problems.append(
                    f"{module} imports {target}: the command line is a leaf, nothing imports it"
                )
            if (
                target.split(".")[0] in FRAMEWORKS
                and not module.startswith(SKINS)
                and module != cli
            ):
                problems.append(
                    f"{module} imports {target}: only the skins and the gateway import a framework"
                )
    problems.extend(
        f"import cycle: {' -> '.join(c)}"
        for c in cycles({k: {t for t in v if t.startswith(PACKAGE)} for k, v in edges.items()})
    )
    return problems


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent / PACKAGE
    problems = violations(root)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
