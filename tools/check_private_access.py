"""Report tests and benches that read or replace a private attribute.

Tests and benches reach the library through its public seams only, so its
internals can change without touching them (issue 22). The AST cannot tell
whose object a name holds, so every ``x._name`` counts unless ``x`` is
``self`` or ``cls`` (a test's own class keeping its own state), or the name is
on the allowlist below of APIs public despite their underscore. Imports of
``resumable_fast``'s private modules and names count too; other packages'
private modules may be imported (a bench builds a peer out of S2's own SDK),
though private attributes read through them still count.

Usage: python tools/check_private_access.py [PATH ...]   (default: tests benches)
Prints ``path:line: message`` for each site and exits 1 if there is any.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATHS = ("tests", "benches")
# Installed JavaScript packages hold no code of ours.
SKIPPED_DIRECTORIES = frozenset({"node_modules"})

LIBRARY = "resumable_fast"
# The native extension is the package's public API although its module name
# is private: the Python layer re-exports part of it, and its stub is checked.
PUBLIC_LIBRARY_MODULES = frozenset({"resumable_fast._core"})

# Stdlib and third-party APIs public despite their underscore, by the module
# name they are read through. Only documented APIs belong here: another
# package's internals are no seam either (the append-session bench relabels
# its S2Client's appends through the client's http= seam, not by replacing
# the client's private headers).
PUBLIC_MODULE_ATTRIBUTES = frozenset(
    {
        # Exits a forked child at once, without the parent's cleanup handlers.
        ("os", "_exit"),
    }
)
# Public on any object: namedtuple's documented methods and attribute, named
# with an underscore so that they cannot clash with field names.
PUBLIC_ATTRIBUTES = frozenset({"_asdict", "_fields", "_make", "_replace"})

# The receivers whose private attributes are their own class's business.
OWN_RECEIVERS = frozenset({"self", "cls"})
# Builtins that take an attribute's name as a string.
ATTRIBUTE_BUILTINS = frozenset({"getattr", "setattr", "delattr", "hasattr"})
# Methods that replace an attribute by name, as pytest's monkeypatch does:
# ``.setattr(obj, "name", value)`` or ``.setattr("module.name", value)``.
ATTRIBUTE_PATCHERS = frozenset({"setattr", "delattr"})


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def is_private(name: str) -> bool:
    """A leading underscore that is not a dunder's."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_library_path(dotted: str) -> bool:
    """Whether a dotted path into ``resumable_fast`` goes through a private part."""
    parts = dotted.split(".")
    if parts[0] != LIBRARY:
        return False
    return any(
        is_private(part) and ".".join(parts[: index + 1]) not in PUBLIC_LIBRARY_MODULES
        for index, part in enumerate(parts)
    )


def dotted_name(node: ast.expr) -> str | None:
    """``a.b.c`` for a chain of names, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted_name(node.value)
        return f"{base}.{node.attr}" if base is not None else None
    return None


def is_own_receiver(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id in OWN_RECEIVERS


def string_constant(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


class PrivateAccessFinder(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.findings: list[Finding] = []

    def report(self, node: ast.stmt | ast.expr, message: str) -> None:
        self.findings.append(Finding(self.path, node.lineno, message))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if private_library_path(alias.name):
                self.report(node, f"imports the private module {alias.name}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        # Relative imports are a test folder's own modules.
        if node.level or node.module is None or node.module.split(".")[0] != LIBRARY:
            return
        if private_library_path(node.module):
            self.report(node, f"imports from the private module {node.module}")
            return
        for alias in node.names:
            if private_library_path(f"{node.module}.{alias.name}"):
                self.report(node, f"imports the private name {alias.name} from {node.module}")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.generic_visit(node)
        if not is_private(node.attr) or is_own_receiver(node.value):
            return
        if node.attr in PUBLIC_ATTRIBUTES:
            return
        receiver = dotted_name(node.value)
        if (receiver, node.attr) in PUBLIC_MODULE_ATTRIBUTES:
            return
        if f"{receiver}.{node.attr}" in PUBLIC_LIBRARY_MODULES:
            return
        action = {ast.Store: "assigns", ast.Del: "deletes"}.get(type(node.ctx), "reads")
        self.report(node, f"{action} the private attribute {ast.unparse(node)}")

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        function = node.func
        by_builtin = isinstance(function, ast.Name) and function.id in ATTRIBUTE_BUILTINS
        by_patcher = isinstance(function, ast.Attribute) and function.attr in ATTRIBUTE_PATCHERS
        if not (by_builtin or by_patcher) or not node.args:
            return
        how = ast.unparse(function)
        target = string_constant(node.args[0])
        if by_patcher and target is not None:
            if private_library_path(target):
                self.report(node, f"{how} on the private path {target!r}")
            return
        name = string_constant(node.args[1]) if len(node.args) > 1 else None
        if name is not None and is_private(name) and not is_own_receiver(node.args[0]):
            self.report(
                node, f"{how} on the private attribute {name!r} of {ast.unparse(node.args[0])}"
            )


def check_source(source: str, path: str) -> list[Finding]:
    finder = PrivateAccessFinder(path)
    finder.visit(ast.parse(source, filename=path))
    return sorted(finder.findings)


def python_files(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_file():
            yield path
            continue
        for found in sorted(path.rglob("*.py")):
            if not SKIPPED_DIRECTORIES.intersection(found.relative_to(path).parts):
                yield found


def main(arguments: Sequence[str]) -> int:
    paths = [Path(argument) for argument in arguments] or [ROOT / name for name in DEFAULT_PATHS]
    findings: list[Finding] = []
    for file in python_files(paths):
        shown = file.relative_to(ROOT) if file.is_relative_to(ROOT) else file
        findings += check_source(file.read_text(encoding="utf-8"), str(shown))
    for finding in findings:
        print(finding)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
