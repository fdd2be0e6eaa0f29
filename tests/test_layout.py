"""The layout keeps its import direction: an ast walk over src/scanmail (STYLE.md, "Layout").

The rules, for a module by the folder it lives in:

- the core (the flat modules of src/scanmail) imports only the core;
- ``mime/`` (shared, not a program) imports the core and itself;
- a program folder (smtpd, scan, fwd, sigupdate, daysumm) imports the core, ``mime`` and
  itself, never another program;
- ``admin/`` imports the core, ``mime``, itself, and only the package ``__init__`` of
  ``scan`` and ``sigupdate`` (``from scanmail.scan import X``, not ``scanmail.scan.runner``);
- ``cli/`` imports anything;
- nowhere an import of scanmail inside a function or class body or under
  ``if TYPE_CHECKING:``: such an import hides a cycle (third-party lazy imports are fine);
- no module is over MAX_LINES lines.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "scanmail"
MAX_LINES = 450

SHARED = "mime"
PROGRAMS = frozenset({"smtpd", "scan", "fwd", "sigupdate", "daysumm"})
ADMIN_MAY_USE = frozenset({"scan", "sigupdate"})  # their package __init__ only

# Breaks of the rules that the tree has today, each with why: `# known: <why>`.
# An entry is (importing module, imported module); the merger removes them as src is fixed.
KNOWN: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Break:
    """One import (or module) that breaks a rule, said so a newcomer knows what to change."""

    module: str
    line: int
    target: str
    rule: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: imports {self.target}: {self.rule}"


def module_name(root: Path, path: Path) -> str:
    """The dotted name of the module at path (a package's __init__ is the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(root: Path, name: str) -> bool:
    return (root / Path(*name.split(".")) / "__init__.py").is_file()


def is_module(root: Path, name: str) -> bool:
    return is_package(root, name) or (root / Path(*name.split("."))).with_suffix(".py").is_file()


def imported(root: Path, module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules an import statement loads (``from pkg import sub`` loads pkg.sub)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        here = module.split(".")
        if not is_package(root, module):
            here.pop()  # a plain module's relative import starts at its package
        base = ".".join(here[: len(here) - (node.level - 1)])
        source = f"{base}.{node.module}" if node.module else base
    else:
        source = node.module or ""
    targets = []
    for alias in node.names:
        sub = f"{source}.{alias.name}"
        targets.append(sub if is_module(root, sub) else source)
    return targets


def folder_of(module: str) -> str | None:
    """The folder a module lives in (scanmail.fwd.dsn -> fwd), None for the core."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in FOLDERS else None


FOLDERS = PROGRAMS | {SHARED, "admin", "cli"}


def rule_broken(importer: str, target: str) -> str | None:
    """The rule that importer importing target breaks, or None."""
    here, there = folder_of(importer), folder_of(target)
    if there is None or here == "cli" or here == there:
        return None
    if here is None:
        return "the core imports only the core"
    if there == SHARED and here != SHARED:
        return None
    if here == SHARED:
        return "mime/ imports only the core and itself"
    if here == "admin":
        if there in ADMIN_MAY_USE and target == f"{PACKAGE}.{there}":
            return None
        if there in ADMIN_MAY_USE:
            return (f"admin/ may import only the package __init__ of {there} "
                    f"(from {PACKAGE}.{there} import ...), not its modules")
        return "admin/ imports the core, mime, and the __init__ of scan and sigupdate only"
    return (f"a program ({here}/) imports only the core and mime, "
            f"never another program ({there}/)")


def walk_imports(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, str | None]]:
    """Every import with why it is not at module level (None when it is)."""
    found: list[tuple[ast.Import | ast.ImportFrom, str | None]] = []

    def visit(node: ast.AST, hidden: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append((child, hidden))
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, hidden or "inside a function body")
            elif isinstance(child, ast.ClassDef):
                visit(child, hidden or "inside a class body")
            elif isinstance(child, ast.If) and is_type_checking(child.test):
                for stmt in child.body:
                    visit_one(stmt, hidden or "under `if TYPE_CHECKING:`")
                for stmt in child.orelse:
                    visit_one(stmt, hidden)
            else:
                visit(child, hidden)

    def visit_one(stmt: ast.stmt, hidden: str | None) -> None:
        wrapper = ast.Module(body=[stmt], type_ignores=[])
        visit(wrapper, hidden)

    visit(tree, None)
    return found


def is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def check_tree(root: Path, package: str = PACKAGE) -> tuple[list[Break], list[tuple[int, str]]]:
    """The breaks of the import rules under root/package, and each module's line count."""
    breaks: list[Break] = []
    sizes: list[tuple[int, str]] = []
    for path in sorted((root / package).rglob("*.py")):
        module = module_name(root, path)
        text = path.read_text(encoding="utf-8")
        sizes.append((len(text.splitlines()), module))
        for node, hidden in walk_imports(ast.parse(text, filename=str(path))):
            for target in imported(root, module, node):
                if target != package and not target.startswith(package + "."):
                    continue  # third-party or standard library: any place is fine
                if hidden is not None:
                    breaks.append(Break(module, node.lineno, target,
                                        f"an import of {package} {hidden} hides a cycle: "
                                        "import at module level, or move the code to where "
                                        "its dependencies point"))
                    continue
                rule = rule_broken(module, target)
                if rule is not None:
                    breaks.append(Break(module, node.lineno, target, rule))
    return breaks, sizes


def test_imports_keep_the_layout_direction() -> None:
    breaks, _ = check_tree(SRC)
    new = [b for b in breaks if (b.module, b.target) not in KNOWN]
    assert not new, "import rules broken (STYLE.md, Layout):\n" + "\n".join(map(str, new))


def test_known_exceptions_are_still_real() -> None:
    """An exception that was fixed must leave KNOWN, so the list never hides a new break."""
    breaks, _ = check_tree(SRC)
    seen = {(b.module, b.target) for b in breaks}
    assert not KNOWN - seen, f"fixed, remove from KNOWN: {sorted(KNOWN - seen)}"


def test_no_module_is_too_long() -> None:
    _, sizes = check_tree(SRC)
    assert sizes, f"no module found under {SRC / PACKAGE}"
    lines, biggest = max(sizes)
    long = [f"{module}: {n} lines" for n, module in sorted(sizes, reverse=True) if n > MAX_LINES]
    assert not long, f"modules over {MAX_LINES} lines:\n" + "\n".join(long)
    print(f"biggest module: {biggest}, {lines} lines (limit {MAX_LINES})")


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


BASE = {
    "scanmail/__init__.py": "",
    "scanmail/errors.py": "",
    "scanmail/mime/__init__.py": "",
    "scanmail/mime/walker.py": "",
    "scanmail/scan/__init__.py": "",
    "scanmail/scan/runner.py": "",
    "scanmail/fwd/__init__.py": "",
    "scanmail/fwd/dsn.py": "",
    "scanmail/admin/__init__.py": "",
    "scanmail/cli/__init__.py": "",
}


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("scanmail/fwd/bounce.py", "from scanmail.scan.runner import run\n",
         "scanmail.fwd.bounce:1: imports scanmail.scan.runner: a program (fwd/) imports only "
         "the core and mime, never another program (scan/)"),
        ("scanmail/fwd/bounce.py", "from ..scan import runner\n",
         "scanmail.fwd.bounce:1: imports scanmail.scan.runner: a program (fwd/) imports only "
         "the core and mime, never another program (scan/)"),
        ("scanmail/admin/show.py", "from scanmail.scan import runner\n",
         "scanmail.admin.show:1: imports scanmail.scan.runner: admin/ may import only the "
         "package __init__ of scan (from scanmail.scan import ...), not its modules"),
        ("scanmail/admin/show.py", "import scanmail.fwd.dsn\n",
         "scanmail.admin.show:1: imports scanmail.fwd.dsn: admin/ imports the core, mime, "
         "and the __init__ of scan and sigupdate only"),
        ("scanmail/spool.py", "from scanmail import mime\n",
         "scanmail.spool:1: imports scanmail.mime: the core imports only the core"),
        ("scanmail/mime/names.py", "from scanmail.fwd import dsn\n",
         "scanmail.mime.names:1: imports scanmail.fwd.dsn: mime/ imports only the core "
         "and itself"),
        ("scanmail/scan/check.py", "def f():\n    from scanmail import errors\n",
         "scanmail.scan.check:2: imports scanmail.errors: an import of scanmail inside a "
         "function body hides a cycle: import at module level, or move the code to where "
         "its dependencies point"),
        ("scanmail/scan/check.py",
         "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .runner import run\n",
         "scanmail.scan.check:3: imports scanmail.scan.runner: an import of scanmail under "
         "`if TYPE_CHECKING:` hides a cycle: import at module level, or move the code to "
         "where its dependencies point"),
    ],
)
def test_the_checker_names_module_import_and_rule(
    tmp_path: Path, module: str, source: str, expected: str
) -> None:
    write_tree(tmp_path, {**BASE, module: source})
    breaks, _ = check_tree(tmp_path)
    assert [str(b) for b in breaks] == [expected]


def test_the_checker_lets_the_allowed_imports_through(tmp_path: Path) -> None:
    write_tree(tmp_path, {
        **BASE,
        "scanmail/fwd/bounce.py": "from scanmail import errors\nfrom scanmail.mime import walker\n"
                                  "from . import dsn\nfrom .dsn import x\nimport os\n",
        "scanmail/admin/show.py": "from scanmail.scan import Inspection\n"
                                  "from scanmail import mime\n",
        "scanmail/cli/scan.py": "from scanmail.scan.runner import run\n"
                                "from scanmail.fwd import dsn\n",
        "scanmail/mime/archives.py": "def f():\n    import tnefparse\n",
        "scanmail/spool.py": "from . import errors\nfrom .errors import GatewayError\n",
    })
    breaks, _ = check_tree(tmp_path)
    assert breaks == []
