"""The package boundaries, read from the source (ARCHITECTURE.md, Package boundaries).

- ``deepfake.contracts`` (schemas, errors, model metadata) imports no other first-party module and no
  third-party package but pydantic, so every part (CLI, services, training) can import it on the core
  dependencies;
- ``deepfake`` as a whole (contracts + shared helpers) imports none of the other packages;
- the top-level packages form no cycle (``cli`` is the top: nothing imports it).

WHY ast and not grimp: grimp is not installed, and the graph needed is small: every ``import`` and
``from ... import`` statement, also those inside functions and ``if TYPE_CHECKING:`` blocks (a lazy import
is still a dependency), relative imports resolved. The checker is tested on a synthetic tree below, so a
cycle cannot pass unseen.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from deepfake.settings import REPO_ROOT

PACKAGES = ("cli", "deepfake", "gateway", "inference", "preprocessor", "training")
CONTRACTS = "deepfake.contracts"
# What a contract may import besides the standard library and other contracts.
CONTRACT_THIRD_PARTY = frozenset({"pydantic"})


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, module: str) -> set[str]:
    """Every module name an import statement of ``path`` names (relative ones made absolute)."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)  # `from pkg import sub` may name a submodule: the same package either way
    return names


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the names it imports, for every module of ``packages`` under ``root``."""
    graph: dict[str, set[str]] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            module = module_name(root, path)
            graph[module] = imported_names(path, module)
    return graph


def package_edges(graph: dict[str, set[str]], packages: tuple[str, ...]) -> dict[tuple[str, str], set[str]]:
    """(importing package, imported package) -> the 'module -> name' imports that make the edge."""
    edges: dict[tuple[str, str], set[str]] = {}
    for module, names in graph.items():
        source = module.split(".")[0]
        for name in names:
            target = name.split(".")[0]
            if target in packages and target != source:
                edges.setdefault((source, target), set()).add(f"{module} -> {name}")
    return edges


def find_cycle(edges: dict[tuple[str, str], set[str]]) -> list[str] | None:
    """One cycle among the packages as [a, b, ..., a], or None (depth-first search)."""
    successors: dict[str, list[str]] = {}
    for source, target in sorted(edges):
        successors.setdefault(source, []).append(target)
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return None
        for nxt in successors.get(node, []):
            cycle = visit(nxt, path + [node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for start in sorted(successors):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


def cycle_report(root: Path, packages: tuple[str, ...]) -> str | None:
    """None when the packages form no cycle, else the cycle and the imports along it."""
    edges = package_edges(import_graph(root, packages), packages)
    cycle = find_cycle(edges)
    if cycle is None:
        return None
    lines = [" -> ".join(cycle)]
    for source, target in zip(cycle, cycle[1:], strict=False):
        lines.extend(f"  {line}" for line in sorted(edges[(source, target)]))
    return "\n".join(lines)


def contract_violations(root: Path, packages: tuple[str, ...]) -> list[str]:
    """Imports of a contract module (or of its parent package's __init__, which importing it runs) that
    reach outside the contracts: another first-party module or a third-party package but pydantic."""
    contracts_dir = root / Path(*CONTRACTS.split("."))
    paths = sorted(contracts_dir.rglob("*.py")) + [root / CONTRACTS.split(".")[0] / "__init__.py"]
    bad = []
    for path in paths:
        if not path.is_file():
            continue
        module = module_name(root, path)
        for name in sorted(imported_names(path, module)):
            top = name.split(".")[0]
            if top in packages:
                ok = name == CONTRACTS or name.startswith(CONTRACTS + ".")
            else:
                ok = top in sys.stdlib_module_names or top in CONTRACT_THIRD_PARTY or top == "__future__"
            if not ok:
                bad.append(f"{module} -> {name}")
    return bad


def test_contracts_import_nothing_but_contracts_stdlib_and_pydantic() -> None:
    assert (REPO_ROOT / "deepfake" / "contracts" / "schemas.py").is_file()
    assert contract_violations(REPO_ROOT, PACKAGES) == []


def test_deepfake_package_imports_no_other_package() -> None:
    edges = package_edges(import_graph(REPO_ROOT, PACKAGES), PACKAGES)
    assert {edge: lines for edge, lines in edges.items() if edge[0] == "deepfake"} == {}


def test_no_cycle_between_top_level_packages() -> None:
    report = cycle_report(REPO_ROOT, PACKAGES)
    assert report is None, f"import cycle between packages:\n{report}"


def test_cli_is_imported_by_no_package() -> None:
    edges = package_edges(import_graph(REPO_ROOT, PACKAGES), PACKAGES)
    assert {edge: lines for edge, lines in edges.items() if edge[1] == "cli"} == {}


def test_cli_dispatch_table_names_only_cli_modules() -> None:
    """The dispatcher imports its subcommands by name (importlib), which the ast graph cannot see; keeping
    them inside cli/ keeps that graph complete (a command that lives elsewhere would be a hidden edge)."""
    from cli.main import COMMANDS

    assert all(path.startswith("cli.commands.") for path in COMMANDS.values()), COMMANDS


# ---- the checker itself, on a synthetic tree ------------------------------------------------------------


def write_tree(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


SYNTHETIC = {
    "deepfake/__init__.py": "",
    "deepfake/contracts/__init__.py": "",
    "deepfake/contracts/schemas.py": "import json\nfrom pydantic import BaseModel\nfrom .errors import E\n",
    "deepfake/contracts/errors.py": "from deepfake.contracts.schemas import X\n",
    "inference/__init__.py": "",
    "inference/backend.py": "from deepfake.contracts.schemas import X\n",
    "preprocessor/__init__.py": "",
    "preprocessor/pipeline.py": "from inference import backend\n",
    "preprocessor/sub/__init__.py": "from .. import pipeline\n",
}
SYNTHETIC_PACKAGES = ("deepfake", "inference", "preprocessor")


def test_checker_accepts_a_layered_tree(tmp_path: Path) -> None:
    write_tree(tmp_path, SYNTHETIC)
    assert contract_violations(tmp_path, SYNTHETIC_PACKAGES) == []
    assert cycle_report(tmp_path, SYNTHETIC_PACKAGES) is None
    graph = import_graph(tmp_path, SYNTHETIC_PACKAGES)
    assert "deepfake.contracts.errors" in graph["deepfake.contracts.schemas"]  # relative import resolved
    assert graph["preprocessor.sub"] == {"preprocessor"}


def test_checker_finds_a_lazy_cycle(tmp_path: Path) -> None:
    write_tree(tmp_path, SYNTHETIC)
    # The cycle this change removed: inference imported a preprocessor setting inside a function.
    write_tree(tmp_path, {"inference/sync.py": "def main():\n    from preprocessor.pipeline import P\n"})
    report = cycle_report(tmp_path, SYNTHETIC_PACKAGES)
    assert report is not None
    assert report.splitlines()[0] == "inference -> preprocessor -> inference"
    assert "  inference.sync -> preprocessor.pipeline" in report.splitlines()


def test_checker_finds_a_contract_that_imports_a_service(tmp_path: Path) -> None:
    write_tree(tmp_path, SYNTHETIC)
    write_tree(
        tmp_path,
        {
            "deepfake/contracts/metadata.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from inference.backend import B\nimport fastapi\n",
            "deepfake/__init__.py": "from deepfake.settings import X\n",
        },
    )
    assert contract_violations(tmp_path, SYNTHETIC_PACKAGES) == [
        "deepfake.contracts.metadata -> fastapi",
        "deepfake.contracts.metadata -> inference.backend",
        "deepfake -> deepfake.settings",
    ]
