"""Product code holds no copied block: no run of more than 10 lines appears twice.

Lines are compared with surrounding whitespace removed, and blank lines and comment-only lines
are skipped, so re-indenting a copy or putting a comment in it does not hide it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Where product code lives, and which files count.
PRODUCT = (
    ("generator", "*.py"), ("webhook", "*.py"), ("harness", "*.py"),
    ("templates", "*.tpl"), ("templates", "*.yaml"), ("templates", "*.sh"), ("templates", "*.py"),
)  # fmt: skip
#: Not counted: each engine chart's values.yaml, which has to hold the defaults the engines share. Helm
#: takes a chart's defaults from its own values.yaml only; the library's values.yaml lands under
#: .Values.storeops-lib, which the engine schemas reject and the templates do not read. Only a
#: dependency's `import-values` lifts a child's values to the top, and then the library takes values
#: (the schemas must admit them), the pinned dependency entry gains a key, and `helm lint` of the chart
#: alone fails: it validates the chart's own values.yaml, without imports, against the schema's
#: required keys (host, url, quota, store, ...).
NOT_PRODUCT = ("templates/*/values.yaml",)
LONGEST = 10


def code_lines(path: Path) -> list[tuple[int, str]]:
    out = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith(("#", "{{/*", "//")):
            out.append((number, line))
    return out


def copies(files: list[Path], *, longest: int = LONGEST) -> list[str]:
    """Each window of ``longest + 1`` lines that occurs in two places, once per pair of places."""
    seen: dict[tuple[str, ...], list[tuple[Path, int]]] = defaultdict(list)
    for path in files:
        lines = code_lines(path)
        for i in range(len(lines) - longest):
            window = tuple(text for _, text in lines[i:i + longest + 1])
            seen[window].append((path, lines[i][0]))
    found = []
    for places in seen.values():
        if len(places) > 1:
            (a, la), (b, lb) = places[0], places[1]
            found.append(f"{_shown(a)}:{la} and {_shown(b)}:{lb}")
    return sorted(set(found))


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def product_files(root: Path = ROOT) -> list[Path]:
    return sorted({p for folder, pattern in PRODUCT for p in (root / folder).rglob(pattern)
                   if "__pycache__" not in p.parts and not p.is_symlink()
                   and not any(part.is_symlink() for part in p.parents)
                   and not any(p.relative_to(root).match(skipped) for skipped in NOT_PRODUCT)})


def test_no_block_of_more_than_ten_lines_is_copied() -> None:
    assert copies(product_files()) == []


def test_a_copied_block_is_found(tmp_path: Path) -> None:
    block = "\n".join(f"value_{i} = compute({i})" for i in range(11)) + "\n"
    (tmp_path / "a.py").write_text("import x\n" + block)
    (tmp_path / "b.py").write_text("# a copy, re-indented\ndef f():\n" + "".join(f"    {line}\n"
                                                                              for line in block.splitlines()))
    assert copies([tmp_path / "a.py", tmp_path / "b.py"], longest=10) == ["a.py:2 and b.py:3"]
    ten = "\n".join(block.splitlines()[:10]) + "\n"
    (tmp_path / "c.py").write_text(ten)
    (tmp_path / "d.py").write_text(ten)
    assert copies([tmp_path / "c.py", tmp_path / "d.py"], longest=10) == []
