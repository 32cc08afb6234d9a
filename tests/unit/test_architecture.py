"""The import rule of docs/architecture.md, checked on the source: who may import whom.

* ``generator`` imports nothing of the service, the harness or the tests;
* ``webhook.intake``, ``webhook.github`` and ``webhook.status`` do not import one another, except
  through the interfaces the doc names (a GitHub sink implements ``webhook.status.sinks``);
* the service's core modules (``webhook/*.py``) import no part, but for the ones that wire the
  parts together (the app, the command line, ``storeops serve``);
* product code imports neither ``harness`` nor ``tests``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("intake", "github", "status")
#: (importing part, imported module) pairs allowed across parts.
INTERFACES = {("github", "webhook.status.sinks")}
#: Core modules that wire the parts together.
WIRING = {"webhook.app", "webhook.cli", "webhook.migration", "webhook.serving", "webhook.__init__"}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute, with ``from x import y`` counted as ``x.y`` too."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "webhook" and parts[1] in PARTS else ""


def violations() -> list[str]:
    out: list[str] = []
    for path in sources("generator", "webhook"):
        me = module_name(path)
        mine = part_of(me)
        for other in imported(path):
            top = other.split(".")[0]
            if top in ("harness", "tests"):
                out.append(f"{me} imports {other}: product code never imports the harness or tests")
            if me.startswith("generator") and top == "webhook":
                out.append(f"{me} imports {other}: the generator knows nothing of the service")
            theirs = part_of(other)
            if not theirs or theirs == mine:
                continue
            if not mine and me not in WIRING:
                out.append(f"{me} imports {other}: only the wiring modules import the parts")
            elif mine and (mine, other) not in INTERFACES and not any(
                    other == allowed or other.startswith(allowed + ".") for part, allowed in INTERFACES
                    if part == mine):
                out.append(f"{me} imports {other}: {mine} reaches {theirs} only through its interfaces")
    return sorted(set(out))


def test_the_import_rule_holds() -> None:
    assert violations() == []


@pytest.mark.parametrize(("code", "expected"), [
    ("from webhook.github import client\n", "webhook.intake.endpoints imports webhook.github.client"),
    ("import webhook.status.reader\n", "webhook.intake.endpoints imports webhook.status.reader"),
    ("from harness import examples\n", "product code never imports the harness"),
])
def test_the_check_catches_a_crossing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str,
                                      expected: str) -> None:
    """The rule's own control: a copy of the source with one forbidden import added is caught."""
    for folder in ("generator", "webhook"):
        for path in sources(folder):
            target = tmp_path / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text())
    endpoints = tmp_path / "webhook" / "intake" / "endpoints.py"
    endpoints.write_text(endpoints.read_text() + "\n" + code)
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    assert any(expected in v for v in violations()), violations()
