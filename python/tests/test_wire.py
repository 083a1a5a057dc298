"""The wire format from Python (docs/wire-format.md): every document the native module hands over
equals its golden file in tests/golden/ after the shared normalization (tests/golden/normalize.json),
the dataclasses account for every key of the golden documents, and foreign versions are refused."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Type

import pytest

import vmigrate
from vmigrate import _native

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
VERSION_KEYS = {"apiVersion", "kind"}


def normalize(doc: Any, scratch: str) -> Any:
    """The rules of normalize.json, as testkit::golden applies them for Rust and C."""
    rules = json.loads((GOLDEN / "normalize.json").read_text())
    keys: Dict[str, Any] = rules["keys"]

    def walk(v: Any, parent_list: Any) -> Any:
        if isinstance(v, dict):
            out = {}
            for k, child in v.items():
                rule = keys.get(f"{parent_list}[].{k}") if parent_list else None
                if rule is None:
                    rule = keys.get(k)
                if rule is not None and child is not None:
                    out[k] = rule
                else:
                    out[k] = walk(child, k if isinstance(child, list) else None)
            return out
        if isinstance(v, list):
            return [walk(i, parent_list) for i in v]
        if isinstance(v, str):
            return v.replace(scratch, rules["scratch"])
        return v

    return walk(doc, None)


def golden(name: str) -> Any:
    return json.loads((GOLDEN / f"{name}.json").read_text())


def assert_golden(name: str, text: str, scratch: Path) -> None:
    got = normalize(json.loads(text), str(scratch))
    assert got == golden(name), f"python: {name} differs from tests/golden/{name}.json:\n{json.dumps(got, indent=2)}"


def write_image(path: Path) -> None:
    """The fixed image of tests/wire_golden.rs: 1 MiB, 64 KiB of ``v`` at 0 and at 512 KiB."""
    with open(path, "wb") as f:
        f.truncate(1 << 20)
        for off in (0, 512 << 10):
            f.seek(off)
            f.write(b"v" * (64 << 10))


def test_python_documents_match_the_golden_files(tmp_path: Path) -> None:
    lab = vmigrate.create_lab_datastore(tmp_path / "lab")
    text = (GOLDEN / "plan.yaml").read_text().replace("@LAB@", lab).replace("@OUT@", str(tmp_path / "out"))
    plan = _native.Plan.from_yaml(text)

    source = _native.Source(f"vmx://{lab}")
    inventory = source.inventory_json()
    source.close()
    assert_golden("inventory", inventory, tmp_path)
    assert_golden("plan-validation", plan.validate(inventory), tmp_path)

    events: List[str] = []
    status_path = tmp_path / "status.json"
    migration = _native.Migration(plan, str(status_path))
    status = migration.run(lambda e: events.append(e))
    migration.close()
    assert_golden("plan-status", status, tmp_path)
    assert_golden("plan-status", _native.load_status(str(status_path)), tmp_path)
    run_events = [e for e in events if json.loads(e)["event"] != "disk"]
    assert_golden("migration-events", "[" + ",".join(run_events) + "]", tmp_path)

    src, dst = tmp_path / "image.raw", tmp_path / "copy.raw"
    write_image(src)
    ticks: List[str] = []
    stats = _native.copy_disk(str(src), str(dst), ticks.append, True)
    assert src.read_bytes() == dst.read_bytes()
    assert_golden("copy-stats", stats, tmp_path)
    assert_golden("copy-progress", ticks[-1], tmp_path)

    # The public layer reads the same documents back without loss.
    public = vmigrate.Source(f"vmx://{lab}")
    try:
        # (normalized: the datastore's free space moves as the test writes)
        again = normalize(public.inventory().raw, str(tmp_path))
        assert again == normalize(json.loads(inventory), str(tmp_path))
    finally:
        public.close()


def check_keys(cls: Type[Any], doc: Dict[str, Any], where: str, top: bool = False) -> None:
    """Every key of ``doc`` is an attribute of ``cls`` (``_FIELDS``) or listed as deliberately kept
    in ``.raw`` only (``_RAW_ONLY``); the object built from it has each mapped attribute."""
    fields: Dict[str, str] = cls._FIELDS
    raw_only: Dict[str, str] = cls._RAW_ONLY
    known = set(fields) | set(raw_only) | (VERSION_KEYS if top else set())
    missing = sorted(set(doc) - known)
    assert not missing, f"{where}: {cls.__name__} silently drops {missing}: map them or list them in _RAW_ONLY"


def test_dataclasses_account_for_every_golden_key() -> None:
    inv = golden("inventory")
    check_keys(vmigrate.Inventory, inv, "inventory", top=True)
    parsed = vmigrate.Inventory.from_dict(inv)
    for vm, pvm in zip(inv["vms"], parsed.vms):
        check_keys(vmigrate.Vm, vm, f"inventory vm {vm['name']}")
        for attr in vmigrate.Vm._FIELDS.values():
            assert hasattr(pvm, attr)
        for d in vm["disks"]:
            check_keys(vmigrate.Disk, d, "inventory disk")
        for n in vm["nics"]:
            check_keys(vmigrate.Nic, n, "inventory nic")
    for n in inv["networks"]:
        check_keys(vmigrate.Network, n, "inventory network")
    for d in inv["datastores"]:
        check_keys(vmigrate.Datastore, d, "inventory datastore")
    for h in inv["hosts"]:
        check_keys(vmigrate.Host, h, "inventory host")

    validation = golden("plan-validation")
    # Plan.validate returns the VMs; "blocked" is any(vm.blocked), derived, not dropped.
    assert set(validation) - VERSION_KEYS == {"blocked", "vms"}
    for v in validation["vms"]:
        check_keys(vmigrate.VmValidation, v, "validation vm")
        for c in v["concerns"]:
            check_keys(vmigrate.Concern, c, "validation concern")

    status_doc = golden("plan-status")
    check_keys(vmigrate.PlanStatus, status_doc, "plan-status", top=True)
    status = vmigrate.PlanStatus.from_dict(status_doc)
    for key, attr in vmigrate.PlanStatus._FIELDS.items():
        if not isinstance(status_doc[key], list):
            assert getattr(status, attr) == status_doc[key], key
    for v in status_doc["vms"]:
        check_keys(vmigrate.VmStatus, v, "plan-status vm")

    stats_doc = golden("copy-stats")
    check_keys(vmigrate.CopyStats, stats_doc, "copy-stats", top=True)
    stats = vmigrate.CopyStats._from(stats_doc)
    for key, attr in vmigrate.CopyStats._FIELDS.items():
        assert getattr(stats, attr) == stats_doc[key], key

    progress_doc = golden("copy-progress")
    check_keys(vmigrate.Progress, progress_doc, "copy-progress", top=True)
    progress = vmigrate.Progress._from(progress_doc)
    for key, attr in vmigrate.Progress._FIELDS.items():
        assert getattr(progress, attr) == progress_doc[key], key

    # Run events reach Python as the dicts themselves: nothing to drop.
    for e in golden("migration-events"):
        assert e["apiVersion"] == vmigrate.API_VERSION and e["kind"] == "MigrationEvent"


@pytest.mark.parametrize("version", ["vmigrate.dev/v2", "vmigrate.dev/v2alpha1", "other.io/v1alpha1", "v1", "vmigrate.dev/v0"])
def test_another_major_version_is_a_clear_error(version: str) -> None:
    doc = dict(golden("plan-status"), apiVersion=version)
    with pytest.raises(vmigrate.ApiVersionError, match="cannot be read"):
        vmigrate.PlanStatus.from_dict(doc)
    inv = dict(golden("inventory"), apiVersion=version)
    with pytest.raises(vmigrate.ApiVersionError):
        vmigrate.Inventory.from_dict(inv)


def test_same_major_version_and_bare_models_are_read() -> None:
    # Within v1 documents only gain fields: a later v1 document with an extra key is read.
    doc = dict(golden("plan-status"), apiVersion="vmigrate.dev/v1", newField=1)
    assert vmigrate.PlanStatus.from_dict(doc).plan == "wire-golden"
    bare = {k: v for k, v in golden("inventory").items() if k not in VERSION_KEYS}
    assert [vm.name for vm in vmigrate.Inventory.from_dict(bare).vms] == [
        vm["name"] for vm in golden("inventory")["vms"]
    ]


def test_a_document_of_another_kind_is_refused() -> None:
    with pytest.raises(vmigrate.ApiVersionError, match="expected a PlanStatus document"):
        vmigrate.PlanStatus.from_dict(golden("copy-stats"))


def test_the_native_validate_refuses_an_inventory_of_another_version() -> None:
    inv = dict(golden("inventory"), apiVersion="vmigrate.dev/v9")
    plan = vmigrate.Plan.from_yaml(
        (GOLDEN / "plan.yaml").read_text().replace("@LAB@", "/nonexistent").replace("@OUT@", os.devnull)
    )
    with pytest.raises(vmigrate.MigrationError, match="apiVersion"):
        plan.validate(inv)
