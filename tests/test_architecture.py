"""The layers of ARCHITECTURE.md hold: import-linter's contracts (pyproject.toml) are kept.

They say which package may import which (each layer only those below it), that nothing
outside the store imports a database driver, that models learn from matrices without
storage or a web framework, and that no package's modules import each other in a cycle.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_import_contracts_are_kept() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is part of the dev extra: pip install -e '.[dev]'"
    run = subprocess.run(
        [lint, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout + run.stderr
    kept = re.findall(r"^(.+) KEPT$", run.stdout, flags=re.MULTILINE)
    assert len(kept) >= 5, run.stdout  # every contract in pyproject.toml was checked


def test_every_layer_in_the_contract_is_a_package_of_nextbuy() -> None:
    source = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    layers = re.search(r'type = "layers"\nlayers = \[(.*?)\]', source, flags=re.DOTALL)
    assert layers
    named = set(re.findall(r"nextbuy\.(\w+)", layers.group(1)))
    top = REPO / "src" / "nextbuy"
    packages = {p.parent.name for p in top.glob("*/__init__.py")}
    modules = {p.stem for p in top.glob("*.py") if p.name != "__init__.py"}
    present = packages | modules
    # every package and module at the top is placed in a layer: nothing escapes the contract
    assert present <= named, f"not in a layer: {sorted(present - named)}"
