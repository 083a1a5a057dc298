"""The wire format from Python (docs/wire-format.md): every document the native module hands over
equals its golden file in tests/golden/ after the shared normalization (tests/golden/normalize.json),
every key of the golden documents is an attribute of the public classes, and foreign versions are refused."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any, Dict, List, Set, Type, get_args, get_type_hints

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


# The public class of each document, and the wire keys a class deliberately computes over (the
# raw value stays readable as obj[key]).
DOCUMENTS: Dict[str, Type[vmigrate.WireObject]] = {
    "inventory": vmigrate.Inventory,
    "plan-validation": vmigrate.PlanValidation,
    "plan-status": vmigrate.PlanStatus,
    "copy-stats": vmigrate.CopyStats,
    "copy-progress": vmigrate.Progress,
}
COMPUTED = {(vmigrate.Vm, "id")}


def snake(key: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in key)


def walk(obj: Any, doc: Any, where: str, seen: Dict[type, Set[str]]) -> None:
    """``obj`` (what the public layer made of ``doc``) has every key of ``doc`` as an attribute,
    equal to the document's value, recursively."""
    if isinstance(doc, list):
        assert isinstance(obj, list) and len(obj) == len(doc), where
        for i, (o, d) in enumerate(zip(obj, doc)):
            walk(o, d, f"{where}[{i}]", seen)
        return
    if not isinstance(doc, dict):
        assert obj == doc and type(obj) is type(doc), f"{where}: {obj!r} != {doc!r}"
        return
    assert isinstance(obj, vmigrate.WireObject), f"{where}: {type(obj).__name__} is not a view"
    cls = type(obj)
    seen.setdefault(cls, set()).update(doc)
    assert obj == doc and obj.raw == doc and json.loads(obj.json()) == doc, where
    for key, value in doc.items():
        attr = snake(key)
        assert attr in dir(obj), f"{where}: {attr} missing from dir()"
        if (cls, attr) in COMPUTED:
            got = obj[key]
        else:
            assert not hasattr(cls, attr), f"{where}: {cls.__name__}.{attr} hides the wire key {key!r}"
            got = getattr(obj, attr)
            assert got is obj[key] or got == obj[key], f"{where}.{attr}"
        walk(got, value, f"{where}.{attr}", seen)


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_every_golden_key_is_an_attribute_of_the_public_class(name: str) -> None:
    """Driven by tests/golden/: a key the library adds is readable without a Python change, and
    no computed property hides a wire key by accident."""
    doc = golden(name)
    cls: Type[vmigrate.WireObject] = DOCUMENTS[name]
    seen: Dict[type, Set[str]] = {}
    walk(cls.from_dict(doc), doc, name, seen)
    walk(cls.from_dict(json.dumps(doc)), doc, name, {})
    # The annotations (what mypy users see) name keys the documents have, with their types
    # (keys the golden files normalize carry placeholders, and Optional ones may be absent).
    normalized = set(json.loads((GOLDEN / "normalize.json").read_text())["keys"])
    for view_cls, keys in seen.items():
        for attr, hint in get_type_hints(view_cls).items():
            if attr.startswith("_"):
                continue
            key = "".join(p if i == 0 else p.capitalize() for i, p in enumerate(attr.split("_")))
            optional = type(None) in get_args(hint)
            assert key in keys or optional, f"{view_cls.__name__}.{attr}: no key {key!r} in {name}"
            if key in keys and hint in (int, str, bool, float) and not any(key in k for k in normalized):
                for value in _values(doc, view_cls, cls, key):
                    assert isinstance(value, hint), f"{view_cls.__name__}.{attr} is {hint.__name__}: {value!r}"


def _values(doc: Any, view_cls: type, top: Type[vmigrate.WireObject], key: str) -> List[Any]:
    """The values of ``key`` in every object of ``doc`` the public layer views as ``view_cls``."""
    found: List[Any] = []

    def visit(obj: Any) -> None:
        if isinstance(obj, list):
            for o in obj:
                visit(o)
        elif isinstance(obj, vmigrate.WireObject):
            if type(obj) is view_cls and key in obj:
                found.append(obj.raw[key])
            for k in obj:
                visit(obj[k])

    visit(top.from_dict(doc))
    return found


def test_views_are_read_only_mappings_with_computed_properties() -> None:
    inv = vmigrate.Inventory.from_dict(golden("inventory"))
    vm = inv.vms[0]
    assert inv.vm(vm.name) is vm and inv.vms is inv.vms
    assert vm.cpus == vm.cpu_sockets * vm.cores_per_socket
    assert vm.id and vm.id in vm["id"].values()
    assert vm.memory_mib == vm.memoryMib == vm["memoryMib"] == vm.get("memoryMib")
    assert isinstance(vm.disks[0], vmigrate.Disk) and isinstance(inv.datastores[0], vmigrate.Datastore)
    assert vm.name in repr(vm) and repr(inv).startswith("Inventory(")
    with pytest.raises(AttributeError, match="read-only"):
        vm.name = "x"
    with pytest.raises(AttributeError, match="no key 'noSuchKey'"):
        vm.no_such_key
    with pytest.raises(KeyError):
        vm["noSuchKey"]
    # An Optional key a document leaves out reads as None; a new key reads without a release.
    disk = vmigrate.Disk.from_dict({k: v for k, v in vm.disks[0].items() if k != "datastore"})
    assert disk.datastore is None
    assert vmigrate.Disk.from_dict(dict(vm.disks[0].raw, newKey={"a": 1})).new_key.a == 1
    assert pickle.loads(pickle.dumps(inv)) == inv and type(pickle.loads(pickle.dumps(vm))) is vmigrate.Vm
    assert vmigrate.Inventory.from_dict(inv.json()) == inv and hash(vmigrate.Inventory.from_dict(inv.json())) == hash(inv)
    status = vmigrate.PlanStatus.from_dict(golden("plan-status"))
    assert status.summary == f"{status.migrated} of {len(status.vms)} VMs migrated"
    validation = vmigrate.PlanValidation.from_dict(golden("plan-validation"))
    assert validation.blocked == any(v.blocked for v in validation.vms)
    # Run events reach Python as the dicts themselves.
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
