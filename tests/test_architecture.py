"""The import graph follows the arrows of docs/ARCHITECTURE.md (read with ast; nothing is imported).

Every `import` / `from ... import` in the shipped packages counts — at module level, inside
functions and under `if TYPE_CHECKING:` — resolved to the module it names. Rules:

* nothing imports `cli`, and nothing inside the tree imports the `pylon` facade
  (`pylon/__init__.py`, the lazy public API for users: name the defining module instead);
* every package imports only packages of a lower layer (LAYERS below), and a few are held
  to a short list (STRICT): `pylon.errors` and `pylon.nostr` are leaves, `wallet` and
  `nexus_relay` stand on the protocol only;
* no cycles between packages (all imports), none between modules (all imports but the
  annotation-only ones under `if TYPE_CHECKING:`, which never run).

A new arrow is a design change: add it to LAYERS / STRICT and to docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOPS = ("pylon", "wallet", "nexus_relay", "dsrs_bridge", "cli")

# package -> layer; a package may import packages of strictly lower layers only
LAYERS: dict[str, int] = {
    "pylon.errors": 0, "pylon.version": 0, "pylon.storage": 0,
    "pylon.nostr": 1, "pylon.home": 1, "pylon.group_commit": 1,
    "pylon.relay": 2,
    "wallet": 3, "nexus_relay": 3,
    "pylon.jobs": 4,  # wire formats may decode invoices (wallet's BOLT11 decoder)
    "pylon.customer": 5, "pylon.provider": 5, "pylon.devstack": 5,
    "pylon.ops": 6,
    "pylon.gateway": 7, "dsrs_bridge": 7, "pylon": 7,
    "cli": 8,
}
# packages held to an explicit list (tighter than their layer)
STRICT: dict[str, set[str]] = {
    "pylon.errors": set(),
    "pylon.version": set(),
    "pylon.storage": set(),
    "pylon.nostr": {"pylon.errors"},
    "wallet": {"pylon.errors", "pylon.nostr", "pylon.relay", "pylon.storage"},
    "nexus_relay": {"pylon.errors", "pylon.nostr", "pylon.relay"},  # relay.framing: the frame writer both ends share
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (resolved to one of ours)
    line: int
    type_only: bool  # under `if TYPE_CHECKING:`

    def __str__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}{' (TYPE_CHECKING)' if self.type_only else ''}"


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for top in TOPS:
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module of ours that `name` (a module or a module.attribute) lands in, if any."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.type_only = 0
        self.found: list[Import] = []

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            self.type_only += 1
            for child in node.body:
                self.visit(child)
            self.type_only -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def _add(self, name: str, line: int) -> None:
        target = _resolve(name)
        if target is not None and target != self.module:
            self.found.append(Import(self.module, target, line, self.type_only > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        for alias in node.names:
            full = f"{module}.{alias.name}"
            self._add(full if full in MODULES else module, node.lineno)


def _imports() -> list[Import]:
    out: list[Import] = []
    for module, path in MODULES.items():
        collector = _Collector(module, path.name == "__init__.py")
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        out.extend(collector.found)
    return out


IMPORTS = _imports()


def package_of(module: str) -> str:
    """`pylon.<sub>` inside pylon (pylon.errors, pylon.nostr, ...), else the top-level package."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "pylon" else parts[0]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(set(edges) | {t for ts in edges.values() for t in ts}):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return out


def test_the_scanner_sees_the_tree() -> None:
    """Guards the other tests against passing on an empty graph."""
    assert {"pylon.errors", "pylon.relay.pool", "wallet.base", "nexus_relay", "cli.main"} <= set(MODULES)
    assert any(i.source == "pylon.provider.provider" and i.target == "pylon.relay.pool" for i in IMPORTS)
    assert set(map(package_of, MODULES)) <= set(LAYERS), "a new package: give it a layer in LAYERS"


def test_nothing_imports_cli_or_the_facade() -> None:
    bad = [str(i) for i in IMPORTS
           if (package_of(i.target) == "cli" and package_of(i.source) != "cli")
           or (i.target == "pylon" and package_of(i.source) != "cli")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", sorted(STRICT))
def test_strict_packages_import_only_their_list(package: str) -> None:
    allowed = STRICT[package] | {package}
    bad = [str(i) for i in IMPORTS if package_of(i.source) == package and package_of(i.target) not in allowed]
    assert not bad, f"{package} may import only {sorted(STRICT[package]) or 'nothing of ours'}:\n" + "\n".join(bad)


def test_arrows_point_down() -> None:
    bad = []
    for i in IMPORTS:
        src, dst = package_of(i.source), package_of(i.target)
        if src != dst and not LAYERS[dst] < LAYERS[src]:
            bad.append(f"{i}  [{src} (layer {LAYERS[src]}) -> {dst} (layer {LAYERS[dst]})]")
    assert not bad, "\n".join(bad)


def test_no_cycles_between_packages() -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    for i in IMPORTS:
        src, dst = package_of(i.source), package_of(i.target)
        if src != dst:
            edges[src].add(dst)
    assert not _cycles(edges)


def test_no_cycles_between_modules() -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    for i in IMPORTS:
        if not i.type_only:
            edges[i.source].add(i.target)
    cycles = _cycles(edges)
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
