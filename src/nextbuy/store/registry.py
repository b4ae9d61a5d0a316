"""Versioned model artifacts on disk and which version is in service.

Layout under <data_dir>/models: v0001/, v0002/, ... (each written to a temporary folder and
renamed into place, so a half-written version never exists) and serving.json, the pointer to
the version in service with the history of promotions (for rollback), replaced atomically.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nextbuy.errors import NotFoundError

META_FILE = "meta.json"
SERVING_FILE = "serving.json"


@dataclass(frozen=True)
class Version:
    name: str
    path: Path
    meta: dict[str, Any]

    @property
    def metrics(self) -> dict[str, float]:
        return self.meta.get("metrics", {})


class ModelRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root

    def versions(self) -> list[Version]:
        if not self.root.is_dir():
            return []
        found = []
        for folder in sorted(self.root.glob("v[0-9]*")):
            meta_path = folder / META_FILE
            if meta_path.is_file():
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                found.append(Version(folder.name, folder, meta))
        return found

    def get(self, name: str) -> Version:
        for version in self.versions():
            if version.name == name:
                return version
        raise NotFoundError(f"model version {name!r} not found in {self.root}")

    def staging(self) -> Path:
        """A fresh folder to write a version into before `register` moves it in place."""
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))

    def register(self, staged: Path, meta: dict[str, Any]) -> Version:
        meta = {**meta, "registered_at": datetime.now(UTC).isoformat()}
        (staged / META_FILE).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
        while True:
            number = len(self.versions()) + 1
            target = self.root / f"v{number:04d}"
            try:
                staged.rename(target)
                break
            except OSError:
                if not target.exists():
                    raise
        return Version(target.name, target, meta)

    def discard(self, staged: Path) -> None:
        shutil.rmtree(staged, ignore_errors=True)

    def serving_state(self) -> dict[str, Any]:
        path = self.root / SERVING_FILE
        if not path.is_file():
            return {"version": None, "history": []}
        return json.loads(path.read_text(encoding="utf-8"))

    def serving(self) -> Version | None:
        name = self.serving_state().get("version")
        return self.get(name) if name else None

    def promote(self, name: str, reason: str) -> None:
        self.get(name)
        state = self.serving_state()
        history = [
            *state.get("history", []),
            {"version": name, "at": datetime.now(UTC).isoformat(), "reason": reason},
        ]
        self._write_state({"version": name, "history": history})

    def rollback(self) -> str:
        """Serve the version that was in service before the current one."""
        state = self.serving_state()
        history = state.get("history", [])
        current = state.get("version")
        earlier = [h["version"] for h in history if h["version"] != current]
        if not earlier:
            raise NotFoundError("no earlier version to roll back to")
        previous = earlier[-1]
        self.promote(previous, f"rollback from {current}")
        return previous

    def _write_state(self, state: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=self.root, prefix=".serving-")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(state, out, indent=2)
        os.replace(temp, self.root / SERVING_FILE)
