"""The error-code table and the exception classes, checked against the C header."""

from __future__ import annotations

import re

import pytest

import vmigrate
from vmigrate import _native

from conftest import ROOT


def screaming_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def test_error_codes_match_c_header() -> None:
    header = (ROOT / "ffi" / "include" / "vmigrate.h").read_text()
    constants = {m.group(1): int(m.group(2)) for m in re.finditer(r"VMIGRATE_RESULT_(\w+) = (\d+)", header)}
    table = {screaming_snake(c.name): c.code for c in vmigrate.error_codes()}
    table["OK"] = 0
    assert constants == table
    assert len(table) > 40


def test_error_table_is_sorted_and_described() -> None:
    codes = vmigrate.error_codes()
    assert [c.code for c in codes] == sorted(c.code for c in codes)
    assert all(c.description and c.kind and c.range for c in codes)
    by_name = {c.name: c for c in codes}
    assert by_name["PlanParse"].code == 1001 and by_name["PlanParse"].range == "plan"
    assert by_name["Panic"].code == 9001 and by_name["Panic"].kind == "internal"


CLASSES = {
    "plan": vmigrate.PlanError,
    "vsphere": vmigrate.VsphereError,
    "kubevirt": vmigrate.KubevirtError,
    "transport": vmigrate.TransportError,
    "execution": vmigrate.ExecutionError,
    "internal": vmigrate.InternalError,
}


@pytest.mark.parametrize("code", vmigrate.error_codes(), ids=lambda c: c.name)
def test_every_code_raises_its_range_class(code: vmigrate.ErrorCode) -> None:
    with pytest.raises(vmigrate.MigrationError) as info:
        _native.raise_error(code.code, "boom")
    err = info.value
    assert isinstance(err, CLASSES[code.range])
    assert (err.code, err.name, err.kind) == (code.code, code.name, code.kind)
    assert str(err) == "boom"


def test_cancelled_is_an_execution_error() -> None:
    assert issubclass(vmigrate.CancelledError, vmigrate.ExecutionError)
    with pytest.raises(vmigrate.CancelledError) as info:
        _native.raise_error(5001, "stop")
    assert info.value.kind == "cancelled"
    with pytest.raises(vmigrate.PlanError) as bad:
        _native.raise_error(42, "no such code")
    assert bad.value.code == 1008
