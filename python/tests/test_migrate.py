"""Sources and plan runs through the local peers: the lab's vmx:// datastore and a dir:// target."""

from __future__ import annotations

import _thread
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

import vmigrate

from conftest import qemu_img_compare


def test_inventory_of_lab_datastore(lab_datastore: Path) -> None:
    source = vmigrate.Source(f"vmx://{lab_datastore}")
    assert "password" not in repr(source)
    inv = source.inventory()
    names = {vm.name for vm in inv.vms}
    assert {"haproxy", "database", "winweb01", "winweb02"} <= names
    db = inv.vm("database")
    assert len(db.disks) == 2 and db.disks[0].capacity_bytes == 8 << 30
    assert db.nics and db.nics[0].network == "segment-migrating-to-ocpvirt"
    assert any(ds.name == "WorkloadDatastore" for ds in inv.datastores)


def test_source_errors_are_typed() -> None:
    with pytest.raises(vmigrate.PlanError) as info:
        vmigrate.Source("gopher://nowhere")
    assert info.value.code == 1007
    with pytest.raises(vmigrate.PlanError):
        vmigrate.Source("https://vcenter.invalid/sdk", username="only-user")


def test_cold_migration_byte_equal(
    lab_datastore: Path, haproxy_plan: Callable[[str], vmigrate.Plan], tmp_path: Path
) -> None:
    plan = haproxy_plan("py-migrate")
    [result] = plan.validate()
    assert not result.blocked
    events: List[Dict[str, Any]] = []
    status = plan.run(progress=events.append, status_path=tmp_path / "status.json")
    assert status.summary == "1 of 1 VMs migrated"
    assert [v.phase for v in status.vms] == ["Completed"]
    kinds = {e["event"] for e in events}
    assert {"phase", "vmDone"} <= kinds
    assert vmigrate.load_status(tmp_path / "status.json").vms[0].phase == "Completed"
    [image] = sorted((tmp_path / "py-migrate" / "disks").glob("*.img"))
    [vmdk] = sorted((lab_datastore / "haproxy").glob("*.vmdk"))
    qemu_img_compare(vmdk, "vmdk", image)


def test_cancel_raises_cancelled(haproxy_plan: Callable[[str], vmigrate.Plan]) -> None:
    plan = haproxy_plan("py-cancel")

    def progress(event: Dict[str, Any]) -> None:
        plan.cancel()

    with pytest.raises(vmigrate.CancelledError) as info:
        plan.run(progress=progress)
    assert info.value.code == 5001
    status = plan.status()
    assert status is not None and [v.phase for v in status.vms] == ["Canceled"]


def test_ctrl_c_cancels_then_raises_keyboard_interrupt(haproxy_plan: Callable[[str], vmigrate.Plan]) -> None:
    plan = haproxy_plan("py-sigint")
    interrupted = []

    def progress(event: Dict[str, Any]) -> None:
        if not interrupted:
            interrupted.append(event)
            _thread.interrupt_main()  # what Ctrl-C does: flag SIGINT for the main thread

    with pytest.raises(KeyboardInterrupt):
        plan.run(progress=progress)
    status = plan.status()
    assert status is not None and [v.phase for v in status.vms] == ["Canceled"]


def test_run_iter_yields_events(haproxy_plan: Callable[[str], vmigrate.Plan]) -> None:
    plan = haproxy_plan("py-iter")
    events = list(plan.run_iter())
    assert events[0]["event"] in {"plan", "phase"}
    assert any(e["event"] == "phase" and e["phase"] == "CopyDisks" for e in events)
    status = plan.status()
    assert status is not None and status.migrated == 1


def test_closing_run_iter_early_cancels(haproxy_plan: Callable[[str], vmigrate.Plan]) -> None:
    plan = haproxy_plan("py-iter-close")
    it = plan.events()
    next(it)
    it.close()
    status = plan.status()
    assert status is not None and status.vms[0].phase in {"Canceled", "Completed"}


def test_vsphere_inventory_against_vcsim(vcsim: Dict[str, Any]) -> None:
    source = vmigrate.Source(
        vcsim["url"], username=vcsim["username"], password=vcsim["password"], thumbprint=vcsim["thumbprint_sha256"]
    )
    assert vcsim["password"] not in repr(source)
    inv = source.inventory()
    assert {"haproxy", "database", "winweb01", "winweb02"} <= {vm.name for vm in inv.vms}
    assert inv.vm("database").nics[0].mac


def test_vsphere_errors_are_typed(vcsim: Dict[str, Any]) -> None:
    with pytest.raises(vmigrate.SourceError) as login:
        vmigrate.Source(vcsim["url"], username=vcsim["username"], password="wrong", thumbprint=vcsim["thumbprint_sha256"]).inventory()
    assert login.value.code == 2003 and login.value.kind == "auth"
    assert "wrong" not in str(login.value)
    bad = ":".join(["00"] * 32)
    with pytest.raises(vmigrate.SourceError) as tls:
        vmigrate.Source(vcsim["url"], username=vcsim["username"], password=vcsim["password"], thumbprint=bad).inventory()
    assert tls.value.code == 2002 and tls.value.kind == "tls"


def _vcsim_sessions(vcsim: Dict[str, Any]) -> int:
    """Client sessions alive in the simulator (its own admin session not counted)."""
    import ssl
    import urllib.request

    base = vcsim["url"].rsplit("/sdk", 1)[0]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the simulator's admin endpoint, loopback, test only
    req = urllib.request.Request(base + "/vmigrate/sessions", method="POST")
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        return int(r.read().decode().strip())


def _settled_sessions(vcsim: Dict[str, Any], want: int, seconds: float = 10.0) -> int:
    """Poll until the session count is ``want`` (background logouts take a moment) or time runs out."""
    import time

    deadline = time.monotonic() + seconds
    n = _vcsim_sessions(vcsim)
    while n != want and time.monotonic() < deadline:
        time.sleep(0.2)
        n = _vcsim_sessions(vcsim)
    return n


def test_sources_end_their_vcenter_session(vcsim: Dict[str, Any]) -> None:
    """vCenter caps sessions per user: a closed, exited or dropped Source must log out."""
    import gc

    def connect() -> vmigrate.Source:
        return vmigrate.Source(
            vcsim["url"], username=vcsim["username"], password=vcsim["password"], thumbprint=vcsim["thumbprint_sha256"]
        )

    base = _settled_sessions(vcsim, 0)
    with connect() as source:
        source.inventory()
        assert _vcsim_sessions(vcsim) == base + 1
    assert _vcsim_sessions(vcsim) == base, "leaving `with Source(...)` must log out"

    closed = connect()
    closed.close()
    assert _vcsim_sessions(vcsim) == base
    with pytest.raises(vmigrate.SourceError):
        closed.inventory()
    closed.close()  # a second close is a no-op

    dropped = connect()
    dropped.inventory()
    assert _vcsim_sessions(vcsim) == base + 1
    del dropped
    gc.collect()
    assert _settled_sessions(vcsim, base) == base, "a Source dropped without close() left its session"


def test_busy_output_folder_is_target_busy(haproxy_plan: Callable[[str], vmigrate.Plan], tmp_path: Path) -> None:
    """Issue 14 item 16: a Python migration takes the output folder's lock as every front end
    does; while another run holds it (here: this test), the run raises code 1010 (TargetBusy)
    and writes no disk; once it is free, the same plan migrates."""
    import fcntl

    plan = haproxy_plan("py-busy")
    out = tmp_path / "py-busy"
    out.mkdir()
    status_path = tmp_path / "py-busy.status.json"
    with open(out / ".vmigrate.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(vmigrate.PlanError) as info:
            plan.run(status_path=status_path)
        assert info.value.code == 1010
        assert ".vmigrate.lock" in str(info.value)
        assert not list((out / "disks").glob("*.img"))
    status = plan.run(status_path=status_path)
    assert status.summary == "1 of 1 VMs migrated"
