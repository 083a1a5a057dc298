"""The library's log records reach Python's logging, with their plan / VM / disk context."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import pytest

import vmigrate

from test_copy import sparse_image


def test_migration_records_carry_plan_vm_and_disk(
    haproxy_plan: Callable[[str], vmigrate.Plan], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="vmigrate")
    haproxy_plan("py-logs").run(status_path=tmp_path / "status.json")
    ours = [r for r in caplog.records if r.name.startswith("vmigrate.")]
    copied = [r for r in ours if r.getMessage().startswith("disk copied")]
    assert copied, [f"{r.name}: {r.getMessage()}" for r in ours]
    r = copied[0]
    # Under the executor's logger (its submodules are child loggers, so a handler or level set on
    # "vmigrate.core.executor" covers them).
    assert r.name.startswith("vmigrate.core.executor") and r.levelno == logging.INFO
    fields = getattr(r, "vmigrate")
    assert fields["plan"] == "py-logs" and fields["vm"] == "haproxy" and int(fields["disk"]) > 0
    assert "vm=haproxy" in r.getMessage()
    # DEBUG records arrive too when asked for, from the engine's own modules.
    assert any(r.levelno == logging.DEBUG and r.name.startswith("vmigrate.core.") for r in ours)


def test_python_logger_levels_filter_records(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    sparse_image(src, 1 << 20)
    caplog.set_level(logging.DEBUG, logger="vmigrate.core.file")
    vmigrate.copy_disk(src, dst)
    opened = [r for r in caplog.records if r.name == "vmigrate.core.file" and "opened file transport" in r.getMessage()]
    assert len(opened) >= 2, [r.getMessage() for r in caplog.records]  # source and target
    assert {getattr(r, "vmigrate")["path"] for r in opened} >= {str(src), str(dst)}
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="vmigrate.core.file")
    vmigrate.copy_disk(src, dst, overwrite=True)  # the first copy's output is there now
    assert not [r for r in caplog.records if r.name.startswith("vmigrate.")]
