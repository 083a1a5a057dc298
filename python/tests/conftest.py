"""Shared fixtures: the repository root, the lab datastore, small plans."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, Iterator

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
                    "skipGuestConversion": True,
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


@pytest.fixture(scope="session")
def vcsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    """govmomi's vcsim with the lab inventory (tests/vcsim), over TLS; yields its ready line
    (url, thumbprint_sha256, username, password, ...)."""
    go = require("go")
    work = tmp_path_factory.mktemp("vcsim")
    binary = work / "vcsim"
    env = dict(os.environ, GOPATH="/usr/share/gocode", GO111MODULE="off")
    build = subprocess.run(
        [go, "build", "-o", str(binary), "."], cwd=ROOT / "tests" / "vcsim", env=env, capture_output=True, text=True
    )
    assert build.returncode == 0, f"building vcsim failed:\n{build.stderr}"
    datastore = work / "datastore"
    datastore.mkdir()
    proc = subprocess.Popen(
        [str(binary), "-datastore-dir", str(datastore), "-username", "py@vsphere.local", "-password", "Py-Pa55!"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip(), "vcsim exited before it was ready"
    try:
        yield json.loads(line)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.terminate()
        proc.wait(timeout=10)
