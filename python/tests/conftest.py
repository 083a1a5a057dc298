"""Shared fixtures: the repository root, the lab datastore, small plans."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import pytest

import vmigrate

ROOT = Path(__file__).resolve().parents[2]


def require(program: str) -> str:
    """Path of an external program; fails under CI when missing, skips locally."""
    path = shutil.which(program)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{program} is required under CI but is not installed")
        pytest.skip(f"{program} is not installed")
    return path


@pytest.fixture(scope="session")
def lab_datastore(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab datastore as the demo writes it (read-only for the tests)."""
    return Path(vmigrate.create_lab_datastore(tmp_path_factory.mktemp("lab")))


@pytest.fixture
def haproxy_plan(lab_datastore: Path, tmp_path: Path) -> Callable[[str], vmigrate.Plan]:
    """A plan moving haproxy from the lab datastore into ``tmp_path/<name>`` (a dir:// target)."""

    def make(name: str) -> vmigrate.Plan:
        return vmigrate.Plan.from_dict(
            {
                "apiVersion": "vmigrate.dev/v1alpha1",
                "kind": "Plan",
                "metadata": {"name": name},
                "spec": {
                    "source": {"url": f"vmx://{lab_datastore}"},
                    "target": {"url": f"dir://{tmp_path / name}"},
                    "targetNamespace": "demo",
                    "vms": [{"name": "haproxy"}],
                    "networkMap": [
                        {"source": {"name": "segment-migrating-to-ocpvirt"}, "destination": {"type": "pod"}}
                    ],
                    "storageMap": [
                        {"source": {"name": "WorkloadDatastore"}, "destination": {"storageClass": "standard"}}
                    ],
                },
            }
        )

    return make


def qemu_img_compare(a: Path, a_format: str, b: Path) -> None:
    """Assert two images have equal guest-visible content."""
    qemu_img = require("qemu-img")
    out = subprocess.run(
        [qemu_img, "compare", "-f", a_format, "-F", "raw", str(a), str(b)], capture_output=True, text=True
    )
    assert out.returncode == 0, f"qemu-img compare: {out.stdout}{out.stderr}"
