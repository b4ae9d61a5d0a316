"""The command line: init finds its project, user errors are one line and a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def nextbuy(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nextbuy.cli", *args], cwd=folder, capture_output=True, text=True
    )


def test_init_then_commands_in_a_subfolder_find_the_project(tmp_path: Path) -> None:
    assert nextbuy(tmp_path, "init").returncode == 0
    assert (tmp_path / "nextbuy.toml").is_file()
    assert (tmp_path / "nextbuy-data" / "nextbuy.db").is_file()
    sub = tmp_path / "exports"
    sub.mkdir()
    (sub / "e.csv").write_text("user_id,item_id,event_type,timestamp\nu1,i1,view,1700000000\n")
    assert nextbuy(sub, "import", "interactions", "e.csv").returncode == 0
    stats = json.loads(nextbuy(sub, "stats", "--json").stdout)
    assert stats["events"] == 1


@pytest.mark.parametrize(
    ("args", "files", "message"),
    [
        (["import", "interactions", "missing.csv"], {}, "missing.csv: no such file"),
        (["import", "things", "e.csv"], {"e.csv": "a\n1\n"}, "expected one of interactions"),
        (["import", "interactions", "e.xlsx"], {"e.xlsx": "x"}, "cannot tell the format"),
        (
            ["import", "interactions", "e.csv"],
            {"e.csv": "user_id,event_type\nu,view\n"},
            "no item_id column",
        ),
        (
            ["import", "interactions", "e.csv", "--map", "user_id"],
            {"e.csv": "user_id,item_id\n"},
            "expected FIELD=COLUMN",
        ),
        (["import", "interactions", "e.csv"], {"e.csv": ""}, "the file is empty"),
        (["stats"], {"nextbuy.toml": "data_dir = 3\nbogus = 1\n"}, "nextbuy.toml"),
        (["stats", "--config", "nope.toml"], {}, "nope.toml: no such configuration file"),
    ],
)
def test_user_errors_are_one_line_without_traceback(
    tmp_path: Path, args: list[str], files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    done = nextbuy(tmp_path, *args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert message in lines[0]


def test_help_everywhere(tmp_path: Path) -> None:
    for args in (["--help"], ["init", "--help"], ["import", "--help"], ["stats", "--help"]):
        done = nextbuy(tmp_path, *args)
        assert done.returncode == 0
        assert "Usage" in done.stdout
