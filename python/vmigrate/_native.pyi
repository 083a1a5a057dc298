"""Type stubs of the native module ``vmigrate._native`` (checked with ``mypy.stubtest``)."""

from collections.abc import Callable
from os import PathLike
from typing import Optional, Union, final

__all__ = [
    "__version__",
    "CancelledError",
    "ExecutionError",
    "InternalError",
    "KubevirtError",
    "Migration",
    "MigrationError",
    "Plan",
    "PlanError",
    "Source",
    "SourceError",
    "TargetError",
    "TransportError",
    "VsphereError",
    "copy_disk",
    "create_lab_datastore",
    "error_code_old_names",
    "error_codes",
    "error_ranges",
    "load_status",
    "raise_error",
]

__version__: str

class MigrationError(Exception):
    code: int
    name: str
    kind: str

class PlanError(MigrationError): ...
class SourceError(MigrationError): ...
class TargetError(MigrationError): ...

VsphereError = SourceError
KubevirtError = TargetError

class TransportError(MigrationError): ...
class ExecutionError(MigrationError): ...
class CancelledError(ExecutionError): ...
class InternalError(MigrationError): ...

def error_codes() -> list[tuple[int, str, str, str, str]]: ...
def error_code_old_names() -> list[tuple[str, int]]: ...
def error_ranges() -> list[tuple[str, int, int, list[str]]]: ...
def raise_error(code: int, message: str) -> None: ...
def create_lab_datastore(root: Union[str, PathLike[str]]) -> str: ...
def load_status(path: Union[str, PathLike[str]]) -> str: ...
def copy_disk(
    src: str,
    dst: str,
    progress: Optional[Callable[[str], object]] = None,
    verify: bool = False,
    *,
    connections: Optional[int] = None,
    request_size: Optional[int] = None,
    flush: bool = True,
    checkpoint: Optional[Union[str, PathLike[str]]] = None,
    copy_file_range: bool = False,
    overwrite: bool = False,
) -> str: ...

@final
class Plan:
    @staticmethod
    def from_file(path: Union[str, PathLike[str]]) -> Plan: ...
    @staticmethod
    def from_yaml(text: str) -> Plan: ...
    @staticmethod
    def from_json(text: str) -> Plan: ...
    @property
    def name(self) -> str: ...
    def to_json(self) -> str: ...
    def validate(self, inventory_json: Optional[str] = None) -> str: ...

@final
class Source:
    def __new__(
        cls,
        url: str,
        username: Optional[str] = None,
        password: Optional[str] = None,
        thumbprint: Optional[str] = None,
        ca_file: Optional[str] = None,
        insecure: bool = False,
    ) -> Source: ...
    @property
    def url(self) -> str: ...
    def inventory_json(self) -> str: ...
    def close(self) -> None: ...

@final
class Migration:
    def __new__(cls, plan: Plan, status_path: Union[str, PathLike[str], None] = None) -> Migration: ...
    def run(self, progress: Optional[Callable[[str], object]] = None) -> str: ...
    def cancel(self) -> None: ...
    def cancel_vm(self, name: str) -> None: ...
    def cutover_now(self) -> None: ...
    def status(self) -> str: ...
    def close(self) -> None: ...
