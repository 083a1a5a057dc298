"""The README's Python snippet runs as written (taken from README.md itself)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT


def readme_block(section: str, lang: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {section}\n")
    rest = text[start:]
    open_at = rest.index(f"```{lang}\n") + len(f"```{lang}\n")
    return rest[open_at : open_at + rest[open_at:].index("```")]


def test_the_python_snippet_of_the_readme_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = readme_block("Python", "python")
    assert "import vmigrate" in block
    # The snippet uses the demo's plan: make it the way the README says (the demo command).
    exe = ROOT / "target" / "debug" / "vmigrate"
    if not exe.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{exe} is missing: cargo test builds it before pytest runs")
        pytest.skip("build the vmigrate binary first (cargo build)")
    subprocess.run([str(exe), "demo", "--workdir", "vmigrate-demo"], cwd=tmp_path, check=True, capture_output=True)
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md (Python)", "exec"), {"__name__": "readme"})
    printed = out.getvalue()
    assert "3 of 3 VMs migrated" in printed, printed
    assert "database database []" in printed, printed
    assert (tmp_path / "status.json").exists()
