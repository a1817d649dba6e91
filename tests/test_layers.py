"""The layer rule of ../shared/DESIGN.md, checked on the source: an algorithm package (attacks,
defenses, hardening) imports neither the runs layer (runs, bench, audit, demo, cli), the report,
nor a sibling algorithm package; the floor (harness, models, checkpoint, data, metrics, train,
...) imports none of them. Imports inside functions count as much as those at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import snnsec

ROOT = Path(snnsec.__file__).parent
ALGORITHMS = {"attacks", "defenses", "hardening"}
ABOVE = {"runs", "bench", "audit", "demo", "cli", "report", "__main__"}


def _snnsec_imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from snnsec import x`` imports snnsec.x; otherwise the module names the package
            names = [f"snnsec.{a.name}" for a in node.names] if node.module == "snnsec" else [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "snnsec" and len(parts) > 1:
                yield parts[1], name, node.lineno


def _violations() -> list[str]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).parts
        home = rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")
        if home in ABOVE:
            continue
        for top, name, line in _snnsec_imports(path):
            if top == home:
                continue
            upward = top in ABOVE
            sideways = top in ALGORITHMS
            if upward or sideways:
                found.append(f"{path.relative_to(ROOT.parent)}:{line} imports {name}")
    return sorted(set(found))


def test_algorithms_and_floor_import_nothing_above_or_beside_them():
    assert _violations() == []


def test_the_check_sees_function_level_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "snnsec"
    (pkg / "defenses").mkdir(parents=True)
    (pkg / "defenses" / "x.py").write_text("def f():\n    from snnsec.attacks.backdoor import run\n    import snnsec.bench\n")
    (pkg / "train.py").write_text("from snnsec.hardening.stcl import EventAugment\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", pkg)
    (pkg / "metrics.py").write_text("from snnsec import report, data\n")
    assert _violations() == ["snnsec/defenses/x.py:2 imports snnsec.attacks.backdoor",
                             "snnsec/defenses/x.py:3 imports snnsec.bench",
                             "snnsec/metrics.py:1 imports snnsec.report",
                             "snnsec/train.py:1 imports snnsec.hardening.stcl"]
