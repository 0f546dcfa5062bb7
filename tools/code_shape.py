"""The shape figures issue 29 asks of the code: long functions, import cycles (function-level imports included),
imports inside functions, and which CLI verbs take `--config` / `--set`.

    python tools/code_shape.py [--max-lines 80]

Reads src/retinaug with `ast` (nothing is imported but the CLI app, for its verbs). Before/after numbers of a
refactor come from running it on both commits.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import networkx as nx
import typer

ROOT = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "retinaug"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(module: str, is_package: bool, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The absolute module names an import statement reads (relative imports resolved against `module`)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = module.split(".")
    if node.level:
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    # `from . import x` may name a submodule: count it as one where the file exists
    return [
        f"{target}.{a.name}"
        if (ROOT / (f"{target}.{a.name}".replace(".", "/") + ".py")).is_file()
        or (ROOT / f"{target}.{a.name}".replace(".", "/")).is_dir()
        else target
        for a in node.names
    ]


def scan() -> tuple[list[tuple[int, str]], nx.DiGraph, int]:
    """(lines, function) over the package's functions, the import graph (edge attribute `local`: only inside a
    function), and the number of imports inside functions."""
    long, graph, inner = [], nx.DiGraph(), 0
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        module, tree = module_name(path), ast.parse(path.read_text())
        graph.add_node(module)
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        long += [
            (f.end_lineno - f.lineno + 1, f"{module}.{f.name} ({path.relative_to(ROOT.parent)}:{f.lineno})")
            for f in functions
        ]
        in_function = {id(n) for f in functions for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            local = id(node) in in_function
            inner += local
            for target in resolve(module, path.name == "__init__.py", node):
                if target.split(".")[0] == PACKAGE and target != module:
                    top_level = graph.get_edge_data(module, target, {}).get("local") is False
                    graph.add_edge(module, target, local=local and not top_level)
    return long, graph, inner


def cli_verbs() -> dict[str, bool]:
    """Every CLI verb (group paths joined by spaces) -> whether it takes a config (--config or an argument) and --set."""
    from retinaug.cli import app

    out: dict[str, bool] = {}

    def walk(command, prefix: str) -> None:  # typer's (vendored) click command; a group has `commands`
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, f"{prefix} {name}".strip())
            return
        names = {p.name for p in command.params} | {o for p in command.params for o in getattr(p, "opts", [])}
        # the config as an option or an argument (run CONFIG), and --set
        out[prefix] = bool({"config", "--config"} & names) and "--set" in names

    walk(typer.main.get_command(app), "")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-lines", type=int, default=80)
    args = parser.parse_args()
    long, graph, inner = scan()
    over = sorted((n, name) for n, name in long if n > args.max_lines)[::-1]
    print(f"functions over {args.max_lines} lines: {len(over)}")
    for n, name in over:
        print(f"  {n:4d}  {name}")
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    top = graph.edge_subgraph([(a, b) for a, b, local in graph.edges(data="local") if not local])
    top_cycles = [sorted(c) for c in nx.strongly_connected_components(top) if len(c) > 1]
    print(f"import cycles (strongly connected module groups), function-level imports included: {len(cycles)}")
    for c in cycles:
        print("  " + " <-> ".join(c))
    print(f"import cycles among top-level imports only: {len(top_cycles)}")
    print(f"imports inside functions: {inner}")
    verbs = cli_verbs()
    print(f"CLI verbs taking --config and --set: {sum(verbs.values())} of {len(verbs)}")
    for name, ok in verbs.items():
        print(f"  {'yes' if ok else 'no ':3s}  retinaug {name}")


if __name__ == "__main__":
    main()
