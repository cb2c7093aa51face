"""Code-shape figures for the closing note of a refactor (issue 13).

Prints, for the packages named on the command line (default: the five code
packages): functions longer than 60 lines, public functions/methods without a
docstring, and lines of edge_runtime. Run from the repository root:

    python benchmarks/code_metrics.py [--list]
"""

from __future__ import annotations

import argparse
import ast
import pathlib

PACKAGES = ("edge_runtime", "train", "export", "calibration", "deploy")
LONG = 60


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _is_public(path: pathlib.Path, node: ast.AST, parents: dict) -> bool:
    if node.name.startswith("_"):
        return False
    if any(part.startswith("_") and part != "__init__.py" for part in path.parts):
        return False
    parent = parents.get(node)
    while parent is not None:
        if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return False  # nested helpers are not API
        if isinstance(parent, ast.ClassDef) and parent.name.startswith("_"):
            return False
        parent = parents.get(parent)
    return True


def _code_lines(text: str, tree: ast.AST) -> int:
    """Non-blank lines that are neither comments nor docstrings: what a reader must execute
    in their head, so docstrings added by a refactor do not count as code growth."""
    doc_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                if isinstance(body[0].value.value, str):
                    doc_lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    return sum(
        1
        for i, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#") and i not in doc_lines
    )


def measure(packages=PACKAGES):
    long_funcs, undocumented, public = [], [], 0
    loc, code = {}, {}
    for pkg in packages:
        lines = code_lines = 0
        for path in sorted(pathlib.Path(pkg).rglob("*.py")):
            text = path.read_text()
            lines += len(text.splitlines())
            tree = ast.parse(text)
            code_lines += _code_lines(text, tree)
            parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
            for fn in _functions(tree):
                length = fn.end_lineno - fn.lineno + 1
                if length > LONG:
                    long_funcs.append((length, f"{path}:{fn.lineno} {fn.name}"))
                if pkg == "edge_runtime" and _is_public(path, fn, parents):
                    public += 1
                    if ast.get_docstring(fn) is None:
                        undocumented.append(f"{path}:{fn.lineno} {fn.name}")
        loc[pkg] = lines
        code[pkg] = code_lines
    return sorted(long_funcs, reverse=True), undocumented, public, loc, code


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="list the offenders too")
    args = parser.parse_args(argv)
    long_funcs, undocumented, public, loc, code = measure()
    print(f"functions over {LONG} lines: {len(long_funcs)}")
    if args.list:
        for length, where in long_funcs:
            print(f"  {length:4d} {where}")
    print(f"edge_runtime public functions without docstring: {len(undocumented)} of {public}")
    if args.list:
        for where in undocumented:
            print(f"  {where}")
    for pkg, lines in loc.items():
        print(f"lines of {pkg}: {lines} (code without docstrings, comments, blanks: {code[pkg]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
