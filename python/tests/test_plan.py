"""Plans: typed parse errors, validation, status files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import vmigrate

from conftest import ROOT


def test_parse_error_is_typed_with_line() -> None:
    text = "apiVersion: vmigrate.dev/v1alpha1\nkind: Plan\nmetadata: { name: x }\nspec:\n  bogus: 1\n"
    with pytest.raises(vmigrate.PlanError) as info:
        vmigrate.Plan.from_yaml(text)
    assert info.value.code == 1001
    assert info.value.name == "PlanParse"
    assert info.value.kind == "invalid-input"
    assert "line 5" in str(info.value)


def test_invalid_plan_is_1002() -> None:
    plan = vmigrate.Plan.from_file(ROOT / "examples" / "plan.yaml").to_dict()
    plan["metadata"]["name"] = "Not_A_DNS_Label"
    with pytest.raises(vmigrate.PlanError) as info:
        vmigrate.Plan.from_dict(plan)
    assert info.value.code == 1002


def test_missing_file_is_a_plan_error(tmp_path: Path) -> None:
    # A plan that cannot be read is the plan's problem, not a transport's.
    with pytest.raises(vmigrate.PlanError) as info:
        vmigrate.Plan.from_file(tmp_path / "nope.yaml")
    assert info.value.code == 1001
    assert "nope.yaml" in str(info.value)


def test_round_trip_and_validate_example() -> None:
    plan = vmigrate.Plan.from_file(ROOT / "examples" / "plan.yaml")
    assert plan.name == "move-webapp-vmware"
    again = vmigrate.Plan.from_dict(plan.to_dict())
    assert again.to_dict() == plan.to_dict()
    inventory = vmigrate.Inventory.from_dict(json.loads((ROOT / "examples" / "inventory.json").read_text()))
    assert inventory.vm("database").disks
    results = again.validate(inventory)
    assert [r.name for r in results] == ["database", "winweb01", "winweb02"]
    by_name = {r.name: r for r in results}
    assert not by_name["database"].blocked
    assert by_name["winweb02"].blocked
    concern = by_name["winweb02"].concerns[0]
    assert (concern.id, concern.severity) == ("cdrom.iso-connected", "critical")


def test_validate_bad_inventory_is_typed() -> None:
    plan = vmigrate.Plan.from_file(ROOT / "examples" / "plan.yaml")
    with pytest.raises(vmigrate.PlanError) as info:
        plan.validate({"vms": 3})
    assert info.value.code == 1008


def test_load_status_errors(tmp_path: Path) -> None:
    with pytest.raises(vmigrate.PlanError) as info:
        vmigrate.load_status(tmp_path / "missing.json")
    assert info.value.code == 1006
