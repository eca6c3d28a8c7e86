"""The design's dependency rules, checked on the source: workers/ reaches the master's
package only through its seam, and arbiter/ never imports workers/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from arbiter.policy import Phase
from arbiter.reexec import Handed, decode_handover, encode_handover

ROOT = Path(__file__).resolve().parents[2]
SEAM = {"arbiter.config", "arbiter.errors", "arbiter.heartbeat", "arbiter.importer",
        "arbiter.process"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            if node.module in ("arbiter", "workers"):
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "workers").rglob("*.py")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_workers_import_only_the_seam_of_the_master(path: Path) -> None:
    reached = {n for n in _imports(path) if n == "arbiter" or n.startswith("arbiter.")}
    assert reached - SEAM - {"arbiter"} == set()


@pytest.mark.parametrize("path", sorted((ROOT / "arbiter").rglob("*.py")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_the_master_never_imports_workers(path: Path) -> None:
    assert not {n for n in _imports(path) if n == "workers" or n.startswith("workers.")}


def test_a_handover_keeps_every_phase_and_reads_the_old_format() -> None:
    handed = [Handed(10, 1, 7, Phase.READY), Handed(11, 2, 8, Phase.BOOTING),
              Handed(12, 3, 9, Phase.RETIRING)]
    assert decode_handover(encode_handover(handed)) == handed
    assert decode_handover("10:1:7,11:2:8") == [Handed(10, 1, 7, Phase.READY),
                                                Handed(11, 2, 8, Phase.READY)]
    assert decode_handover("") == []
