"""The import rule (README "Architecture", docs/architecture.md): imports go one way, and no module calls another's
private helper. Read from every module's source with `ast`, so a violating import fails here before it runs.

- the product: `tasks/` imports only tasks; `flows/` imports flows and tasks;
- the operating surface: `deployments/` and `chatops/` import the product; `cli/` imports them and the product, and
  loads `devstack/` and `sandbox/` only inside the commands that need them (`tcscale demo`, `up`, `sandbox`);
- the development harnesses (`devstack/`) import anything but tests;
- `sandbox/` imports nothing of the above: the product reaches it only through the Tencent API, SSH and HTTP;
- `tests/` and `bench/` import anything (bench not tests).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = {"flows", "tasks"}
SURFACE = {"deployments", "chatops", "cli"}
PACKAGES = PRODUCT | SURFACE | {"devstack", "sandbox", "tests", "bench"}
MAY_IMPORT: dict[str, set[str]] = {
    "tasks": {"tasks"},
    "flows": {"flows", "tasks"},
    "deployments": {"deployments"} | PRODUCT,
    "chatops": {"chatops"} | PRODUCT,
    "cli": SURFACE | PRODUCT,
    "devstack": PACKAGES - {"tests", "bench"},
    "sandbox": {"sandbox"},
    "tests": PACKAGES,
    "bench": PACKAGES - {"tests"},
}
# Imported inside a function only, when the command that needs it runs.
MAY_IMPORT_WHEN_RUN: dict[str, set[str]] = {"cli": {"devstack", "sandbox"}}


def modules(root: Path) -> Iterator[tuple[Path, str]]:
    """Every module of the project's packages: (path, dotted name)."""
    for package in sorted(PACKAGES):
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            yield path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree: ast.Module, module: str, is_package: bool) -> Iterator[tuple[ast.stmt, str, bool]]:
    """(statement, imported module, at module level) for every import, relative ones resolved."""

    def visit(node: ast.AST, top: bool) -> Iterator[tuple[ast.stmt, str, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield child, alias.name, top
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".")[: len(module.split(".")) - child.level + (1 if is_package else 0)]
                    name = ".".join([*base, child.module] if child.module else base)
                else:
                    name = child.module or ""
                yield child, name, top
            else:
                inner = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                yield from visit(child, top and not inner)

    yield from visit(tree, True)


def private_uses(tree: ast.Module, module: str) -> Iterator[tuple[int, str]]:
    """`from x import _helper` and `x._helper` of another project module: (line, what)."""
    bound: dict[str, str] = {}  # local name -> the project module it names
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            for alias in node.names:
                if _private(alias.name) and node.module != module:
                    yield node.lineno, f"from {node.module} import {alias.name}"
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    bound[alias.asname or alias.name] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and isinstance(node.value, ast.Name)
            and bound.get(node.value.id, module) != module
        ):
            yield node.lineno, f"{node.value.id}.{node.attr} ({bound[node.value.id]})"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def violations(root: Path) -> list[str]:
    found = []
    for path, module in modules(root):
        where, package = path.relative_to(root), module.split(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        for statement, imported, top in imports(tree, module, path.name == "__init__.py"):
            target = imported.split(".")[0]
            if target not in PACKAGES or target in MAY_IMPORT[package]:
                continue
            if not top and target in MAY_IMPORT_WHEN_RUN.get(package, set()):
                continue
            rule = f"{package}/ may import {', '.join(sorted(MAY_IMPORT[package]))}"
            if target in MAY_IMPORT_WHEN_RUN.get(package, set()):
                rule += f", and {target}/ only inside the command that needs it"
            found.append(f"{where}:{statement.lineno}: imports {imported}: {rule}")
        for line, what in private_uses(tree, module):
            found.append(f"{where}:{line}: uses another module's private {what}: make it public or move it")
    return found


def test_imports_go_one_way_and_no_module_uses_anothers_private_helpers() -> None:
    assert violations(ROOT) == []


def test_the_check_fails_on_violating_imports(tmp_path: Path) -> None:
    sources = {
        "tasks/cvm.py": "from flows.parameters import TierParameters\n",
        "flows/scale_out.py": "from tasks import cvm\nfrom devstack import demo\nx = cvm._secret\n",
        "flows/shared/__init__.py": "from ..parameters import Model\n",
        "flows/parameters.py": "from deployments.setup import run_setup\n",
        "sandbox/server.py": "def f():\n    import tasks.cloud\n",
        "chatops/app.py": "from cli.main import app\n",
        "cli/main.py": "from sandbox.cli import app\n\ndef up():\n    from devstack.up import run_up\n",
        "cli/__init__.py": "from tasks.cvm import _internet_like\n",
        "devstack/up.py": "from sandbox.server import EmbeddedSandbox\nfrom flows import scale_out\n",
    }
    for name, text in sources.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = "\n".join(violations(tmp_path))
    for expected in (
        "tasks/cvm.py:1: imports flows.parameters:",
        "flows/scale_out.py:2: imports devstack:",
        "flows/scale_out.py:3: uses another module's private cvm._secret",
        "flows/parameters.py:1: imports deployments.setup",
        "sandbox/server.py:2: imports tasks.cloud",
        "chatops/app.py:1: imports cli.main:",
        "cli/main.py:1: imports sandbox.cli: cli/ may import",
        "cli/__init__.py:1: uses another module's private from tasks.cvm import _internet_like",
    ):
        assert expected in found, f"{expected!r} not reported in:\n{found}"
    assert "cli/main.py:4" not in found and "devstack/" not in found and "flows/shared" not in found
    assert len(found.splitlines()) == 8


def test_the_operators_commands_load_no_module_of_the_sandbox_or_the_dev_stack() -> None:
    """`tcscale --help`, `run` (every flow it can start), `setup`, `serve` and `chatops`: what each imports when it
    runs, loaded in a fresh interpreter."""
    probe = textwrap.dedent(
        """
        import sys
        from cli.main import app, flows
        flows()
        import chatops.app, chatops.settings, deployments.lunch_peak, deployments.serve, deployments.setup
        for args in (["--help"], ["run", "--help"], ["setup", "--help"], ["serve", "--help"], ["chatops", "--help"]):
            try:
                app(args, prog_name="tcscale", standalone_mode=False)
            except SystemExit:
                pass
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("sandbox", "devstack")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
    assert "Usage: tcscale run" in done.stdout and "Usage: tcscale chatops" in done.stdout
