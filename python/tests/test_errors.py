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
    "source": vmigrate.SourceError,
    "target": vmigrate.TargetError,
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


# Old name -> (new name, number), frozen: a number here never changes, and an old name keeps
# resolving to it (the same list as core/src/error.rs's PUBLISHED and ffi/tests/c/old_names.c).
OLD_NAMES = {
    "VsphereConnect": ("SourceConnect", 2001),
    "VsphereTls": ("SourceTls", 2002),
    "VsphereInvalidLogin": ("SourceInvalidLogin", 2003),
    "VsphereNotAuthenticated": ("SourceNotAuthenticated", 2004),
    "VsphereNotFound": ("SourceNotFound", 2005),
    "VsphereTaskFailed": ("SourceTaskFailed", 2006),
    "VsphereInvalidState": ("SourceInvalidState", 2007),
    "VsphereTaskInProgress": ("SourceTaskInProgress", 2008),
    "VsphereFault": ("SourceFault", 2009),
    "VsphereMalformed": ("SourceMalformed", 2010),
    "VmxParse": ("SourceDescriptorParse", 2011),
    "VmdkFormat": ("SourceDiskFormat", 2012),
    "DatastoreFileMissing": ("SourceFileMissing", 2013),
    "KubeConfig": ("TargetConfig", 3001),
    "KubeForbidden": ("TargetForbidden", 3002),
    "KubeNotFound": ("TargetNotFound", 3003),
    "KubeConflict": ("TargetConflict", 3004),
    "KubeInvalid": ("TargetInvalid", 3005),
    "KubeMissingCrd": ("TargetMissingApi", 3006),
    "KubeQuota": ("TargetQuota", 3007),
    "CdiUpload": ("TargetUploadFailed", 3008),
    "DataVolumeFailed": ("TargetImportFailed", 3009),
    "KubeApi": ("TargetFault", 3010),
}


def test_old_code_names_resolve_to_their_unchanged_numbers() -> None:
    listed = {old: (c.name, c.code) for c in vmigrate.error_codes() for old in c.old_names}
    assert listed == OLD_NAMES
    for old, (new, number) in OLD_NAMES.items():
        by_old, by_new, by_number = vmigrate.error_code(old), vmigrate.error_code(new), vmigrate.error_code(number)
        assert by_old == by_new == by_number
        assert by_old.code == number and by_old.name == new
    with pytest.raises(KeyError):
        vmigrate.error_code("NoSuchCode")


def test_old_exception_names_are_the_role_classes() -> None:
    assert vmigrate.VsphereError is vmigrate.SourceError is _native.VsphereError is _native.SourceError
    assert vmigrate.KubevirtError is vmigrate.TargetError is _native.KubevirtError is _native.TargetError
    assert {"SourceError", "TargetError", "VsphereError", "KubevirtError"} <= set(vmigrate.__all__)
    # Code written against the old names still catches every error of the range.
    with pytest.raises(vmigrate.VsphereError) as source:
        _native.raise_error(2003, "login refused")
    assert (source.value.code, source.value.name) == (2003, "SourceInvalidLogin")
    with pytest.raises(vmigrate.KubevirtError) as target:
        _native.raise_error(3006, "no CRDs")
    assert (target.value.code, target.value.name) == (3006, "TargetMissingApi")


def test_ranges_are_named_by_role_and_old_range_names_still_select() -> None:
    ranges = vmigrate.error_ranges()
    assert [r.name for r in ranges] == list(CLASSES)
    assert all(r.exception is CLASSES[r.name] for r in ranges)
    by_name = {r.name: r for r in ranges}
    assert (by_name["source"].first, by_name["source"].last, by_name["source"].old_names) == (2000, 2999, ("vsphere",))
    assert (by_name["target"].first, by_name["target"].last, by_name["target"].old_names) == (3000, 3999, ("kubevirt",))
    for r in ranges:
        codes = vmigrate.error_codes(range=r.name)
        assert codes and all(r.first <= c.code <= r.last and c.range == r.name for c in codes)
    assert vmigrate.error_codes(range="vsphere") == vmigrate.error_codes(range="source")
    assert vmigrate.error_codes(range="kubevirt") == vmigrate.error_codes(range="target")
    assert [c.code for c in vmigrate.error_codes(range="source")] == list(range(2001, 2015))
    with pytest.raises(KeyError):
        vmigrate.error_codes(range="ova")
