"""vmigrate: move VMware vSphere virtual machines to KubeVirt, from Python.

A Pythonic layer over the native module ``vmigrate._native`` (Rust, pyo3)::

    import vmigrate

    plan = vmigrate.Plan.from_file("plan.yaml")
    for vm in plan.validate():
        print(vm.name, "->", vm.target_name, [c.id for c in vm.concerns])
    status = plan.run(progress=lambda event: print(event["event"]))
    print(status.summary)

Long calls (connecting, listing, validating, copying, running a plan) release the GIL; progress
callbacks run on the calling thread. Ctrl-C during a copy or a run cancels it cleanly (targets
cleaned up, sources restored) and then raises ``KeyboardInterrupt``. Errors are
:class:`MigrationError` subclasses, one per range of the error-code table shared with Rust and C,
carrying ``.code`` (the number), ``.name`` and ``.kind``.

Every JSON document the native module hands over carries ``apiVersion`` (``vmigrate.dev/v1alpha1``)
and ``kind`` (docs/wire-format.md); a document of another major version raises
:class:`ApiVersionError` instead of being misread.

The library logs through :mod:`logging`, to loggers under ``vmigrate`` named after its Rust
modules (``vmigrate.core.executor``, ``vmigrate.core.nbd``, ...); each record carries its plan /
VM / disk context in the message and as ``record.vmigrate`` (a dict). Nothing shows unless the
application configures logging, e.g. ``logging.basicConfig(level=logging.INFO)``.
"""

from __future__ import annotations

import json
import os
import queue
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, Iterator, List, Optional, Union

from . import _native
from ._native import (
    CancelledError,
    ExecutionError,
    InternalError,
    KubevirtError,
    MigrationError,
    PlanError,
    TransportError,
    VsphereError,
)

__version__: str = _native.__version__

__all__ = [
    "API_VERSION",
    "ApiVersionError",
    "CancelledError",
    "Concern",
    "CopyStats",
    "Datastore",
    "Disk",
    "ErrorCode",
    "ExecutionError",
    "Host",
    "InternalError",
    "Inventory",
    "KubevirtError",
    "MigrationError",
    "Network",
    "Nic",
    "Plan",
    "PlanError",
    "PlanStatus",
    "Progress",
    "Source",
    "TransportError",
    "Vm",
    "VmStatus",
    "VmValidation",
    "VsphereError",
    "copy_disk",
    "create_lab_datastore",
    "error_codes",
    "load_status",
]

PathLike = Union[str, "os.PathLike[str]"]


# ----------------------------------------------------------------------------------------------
# Wire format (docs/wire-format.md)

API_VERSION = "vmigrate.dev/v1alpha1"
"""The ``apiVersion`` of the documents this package was written for."""

_API_GROUP = "vmigrate.dev"
_API_MAJOR = 1
_VERSION_RE = re.compile(r"v(\d+)(?:(?:alpha|beta)\d+)?")


class ApiVersionError(ValueError):
    """A document of an ``apiVersion`` (or ``kind``) this package cannot read: within one major
    version documents only gain fields, so any ``vmigrate.dev/v1...`` is read; another group or
    major version would be misread, and is refused."""


def _document(data: Union[str, Dict[str, Any]], kind: str) -> Dict[str, Any]:
    """Parse (when text) and check a wire document: its ``apiVersion`` must be of this package's
    group and major version and its ``kind`` the one expected. A dict without ``apiVersion`` is
    the bare model (as ``vmigrate inventory --output json`` prints it) and is accepted."""
    d: Dict[str, Any] = json.loads(data) if isinstance(data, str) else data
    if not isinstance(d, dict):
        raise ApiVersionError(f"expected a {kind} document (a JSON object), got {type(d).__name__}")
    version = d.get("apiVersion")
    if version is None:
        return d
    group, _, ver = str(version).partition("/")
    m = _VERSION_RE.fullmatch(ver)
    if group != _API_GROUP or m is None or int(m.group(1)) != _API_MAJOR:
        raise ApiVersionError(
            f"a {kind} document of apiVersion {version!r} cannot be read by vmigrate {_native.__version__}, "
            f"which reads {_API_GROUP}/v{_API_MAJOR} documents ({API_VERSION}); use a matching vmigrate package"
        )
    if d.get("kind", kind) != kind:
        raise ApiVersionError(f"expected a {kind} document, got kind {d.get('kind')!r}")
    return d


# ----------------------------------------------------------------------------------------------
# Error codes


@dataclass(frozen=True)
class ErrorCode:
    """One entry of the stable error-code table (the numbers C returns as ``vmigrate_result``)."""

    code: int
    name: str
    range: str
    kind: str
    description: str


def error_codes() -> List[ErrorCode]:
    """Every error code, in numeric order."""
    return [ErrorCode(*row) for row in _native.error_codes()]


# ----------------------------------------------------------------------------------------------
# Inventory


@dataclass(frozen=True)
class Disk:
    """A virtual disk of a source VM."""

    key: int
    label: str
    capacity_bytes: int
    file: str
    datastore: Optional[str]
    thin: bool
    raw: Dict[str, Any] = field(repr=False, compare=False)

    _FIELDS: ClassVar[Dict[str, str]] = {
        "key": "key",
        "label": "label",
        "capacityBytes": "capacity_bytes",
        "file": "file",
        "datastore": "datastore",
        "thin": "thin",
    }
    _RAW_ONLY: ClassVar[Dict[str, str]] = {
        k: "in .raw" for k in ("bus", "unit", "mode", "shared", "rdm", "changeId")
    }

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "Disk":
        return cls(
            key=d["key"],
            label=d.get("label", ""),
            capacity_bytes=d.get("capacityBytes", 0),
            file=d.get("file", ""),
            datastore=d.get("datastore"),
            thin=d.get("thin", False),
            raw=d,
        )


@dataclass(frozen=True)
class Nic:
    """A network interface of a source VM."""

    key: int
    mac: str
    network: Optional[str]
    model: str
    ip_addresses: List[str]
    raw: Dict[str, Any] = field(repr=False, compare=False)

    _FIELDS: ClassVar[Dict[str, str]] = {
        "key": "key",
        "mac": "mac",
        "network": "network",
        "model": "model",
        "ipAddresses": "ip_addresses",
    }
    _RAW_ONLY: ClassVar[Dict[str, str]] = {"connected": "in .raw"}

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "Nic":
        return cls(
            key=d["key"],
            mac=d.get("mac", ""),
            network=d.get("network"),
            model=str(d.get("model", "")),
            ip_addresses=list(d.get("ipAddresses", [])),
            raw=d,
        )


@dataclass(frozen=True)
class Vm:
    """A source VM as the inventory describes it."""

    id: str
    name: str
    power_state: str
    guest_id: str
    firmware: str
    cpus: int
    memory_mib: int
    disks: List[Disk]
    nics: List[Nic]
    raw: Dict[str, Any] = field(repr=False, compare=False)

    _FIELDS: ClassVar[Dict[str, str]] = {
        "id": "id",
        "name": "name",
        "powerState": "power_state",
        "guestId": "guest_id",
        "firmware": "firmware",
        "cpuSockets": "cpus",
        "coresPerSocket": "cpus",
        "memoryMib": "memory_mib",
        "disks": "disks",
        "nics": "nics",
    }
    _RAW_ONLY: ClassVar[Dict[str, str]] = {
        k: "VMware details, in .raw (issue 15 makes the model provider-neutral)"
        for k in (
            "guestFullName",
            "osId",
            "secureBoot",
            "cdroms",
            "tpm",
            "passthroughDevices",
            "cbtEnabled",
            "snapshots",
            "toolsStatus",
            "faultTolerance",
            "drsRules",
            "host",
            "cluster",
            "template",
        )
    }

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "Vm":
        ident = d.get("id", {})
        return cls(
            id=ident.get("sourceRef", ident.get("moref", "")) if isinstance(ident, dict) else str(ident),
            name=d["name"],
            power_state=str(d.get("powerState", "")),
            guest_id=d.get("guestId", ""),
            firmware=str(d.get("firmware", "")),
            cpus=d.get("cpuSockets", 1) * d.get("coresPerSocket", 1),
            memory_mib=d.get("memoryMib", 0),
            disks=[Disk._from(x) for x in d.get("disks", [])],
            nics=[Nic._from(x) for x in d.get("nics", [])],
            raw=d,
        )


@dataclass(frozen=True)
class Network:
    """A source network (port group, distributed port group, NSX segment)."""

    id: str
    name: str
    kind: str
    raw: Dict[str, Any] = field(repr=False, compare=False)

    _FIELDS: ClassVar[Dict[str, str]] = {"id": "id", "name": "name", "kind": "kind"}
    _RAW_ONLY: ClassVar[Dict[str, str]] = {}

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "Network":
        return cls(id=d.get("id", ""), name=d["name"], kind=str(d.get("kind", "")), raw=d)


@dataclass(frozen=True)
class Datastore:
    """A source datastore."""

    id: str
    name: str
    kind: str
    capacity_bytes: int
    free_bytes: int
    raw: Dict[str, Any] = field(repr=False, compare=False)

    _FIELDS: ClassVar[Dict[str, str]] = {
        "id": "id",
        "name": "name",
        "kind": "kind",
        "capacityBytes": "capacity_bytes",
        "freeBytes": "free_bytes",
    }
    _RAW_ONLY: ClassVar[Dict[str, str]] = {}

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "Datastore":
        return cls(
            id=d.get("id", ""),
            name=d["name"],
            kind=d.get("kind", ""),
            capacity_bytes=d.get("capacityBytes", 0),
            free_bytes=d.get("freeBytes", 0),
            raw=d,
        )


@dataclass(frozen=True)
class Host:
    """A source ESXi host."""

    id: str
    name: str
    cluster: Optional[str]
    raw: Dict[str, Any] = field(repr=False, compare=False)

    _FIELDS: ClassVar[Dict[str, str]] = {"id": "id", "name": "name", "cluster": "cluster"}
    _RAW_ONLY: ClassVar[Dict[str, str]] = {}

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "Host":
        return cls(id=d.get("id", ""), name=d["name"], cluster=d.get("cluster"), raw=d)


@dataclass(frozen=True)
class Inventory:
    """What a source holds."""

    vms: List[Vm]
    networks: List[Network]
    datastores: List[Datastore]
    hosts: List[Host]
    raw: Dict[str, Any] = field(repr=False, compare=False)

    _FIELDS: ClassVar[Dict[str, str]] = {
        "vms": "vms",
        "networks": "networks",
        "datastores": "datastores",
        "hosts": "hosts",
    }
    _RAW_ONLY: ClassVar[Dict[str, str]] = {}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Inventory":
        """Build from the ``Inventory`` document, or the bare model ``vmigrate inventory --output
        json`` prints; :class:`ApiVersionError` for a document of another major version."""
        d = _document(d, "Inventory")
        return cls(
            vms=[Vm._from(x) for x in d.get("vms", [])],
            networks=[Network._from(x) for x in d.get("networks", [])],
            datastores=[Datastore._from(x) for x in d.get("datastores", [])],
            hosts=[Host._from(x) for x in d.get("hosts", [])],
            raw=d,
        )

    def vm(self, name: str) -> Vm:
        """The VM called ``name``; ``KeyError`` when there is none."""
        for vm in self.vms:
            if vm.name == name:
                return vm
        raise KeyError(name)


class Source:
    """A source of VMs: ``https://vcenter/sdk`` (vSphere) or ``vmx:///path`` (a datastore folder).

    Connecting happens here (GIL released); credentials given as arguments are used instead of the
    ``VMIGRATE_SOURCE_USERNAME`` / ``VMIGRATE_SOURCE_PASSWORD`` environment variables.
    """

    def __init__(
        self,
        url: str,
        username: Optional[str] = None,
        password: Optional[str] = None,
        thumbprint: Optional[str] = None,
        ca_file: Optional[str] = None,
        insecure: bool = False,
    ) -> None:
        self._native = _native.Source(
            url,
            username=username,
            password=password,
            thumbprint=thumbprint,
            ca_file=ca_file,
            insecure=insecure,
        )

    @property
    def url(self) -> str:
        """The URL connected to."""
        return self._native.url

    def inventory(self) -> Inventory:
        """List VMs (with disks and NICs), networks, datastores and hosts."""
        return Inventory.from_dict(_document(self._native.inventory_json(), "Inventory"))

    def close(self) -> None:
        """End the source's session now (vSphere ``Logout``). vCenter limits sessions per user and
        keeps an abandoned one until its idle timeout, so close sources you are done with (or use
        ``with Source(...) as source:``). A dropped source is logged out in the background."""
        self._native.close()

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Source({self.url!r})"


# ----------------------------------------------------------------------------------------------
# Validation and status


@dataclass(frozen=True)
class Concern:
    """One validation finding: a stable id, a severity (info, warning, critical), a message."""

    id: str
    severity: str
    message: str

    _FIELDS: ClassVar[Dict[str, str]] = {"id": "id", "severity": "severity", "message": "message"}
    _RAW_ONLY: ClassVar[Dict[str, str]] = {}

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "Concern":
        return cls(d["id"], d["severity"], d["message"])


@dataclass(frozen=True)
class VmValidation:
    """The validation result of one VM of a plan."""

    name: str
    source_id: Optional[str]
    target_name: str
    concerns: List[Concern]

    _FIELDS: ClassVar[Dict[str, str]] = {
        "name": "name",
        "sourceId": "source_id",
        "targetName": "target_name",
        "concerns": "concerns",
    }
    _RAW_ONLY: ClassVar[Dict[str, str]] = {}

    @classmethod
    def _from(cls, v: Dict[str, Any]) -> "VmValidation":
        return cls(
            name=v["name"],
            source_id=v.get("sourceId"),
            target_name=v["targetName"],
            concerns=[Concern._from(c) for c in v.get("concerns", [])],
        )

    @property
    def blocked(self) -> bool:
        """Whether a critical concern blocks this VM."""
        return any(c.severity == "critical" for c in self.concerns)


@dataclass(frozen=True)
class VmStatus:
    """Where one VM of a run is."""

    name: str
    target_name: str
    phase: str
    error: Optional[Dict[str, Any]]
    disks: List[Dict[str, Any]]
    raw: Dict[str, Any] = field(repr=False, compare=False)

    _FIELDS: ClassVar[Dict[str, str]] = {
        "name": "name",
        "targetName": "target_name",
        "phase": "phase",
        "error": "error",
        "disks": "disks",
    }
    _RAW_ONLY: ClassVar[Dict[str, str]] = {
        k: "in .raw"
        for k in (
            "sourceId",
            "history",
            "concerns",
            "sourceChanges",
            "downtimeSeconds",
            "precopies",
            "conversion",
        )
    }


@dataclass(frozen=True)
class PlanStatus:
    """The status of a plan run (also what the status file holds)."""

    plan: str
    warm: bool
    started: Optional[str]
    completed: Optional[str]
    vms: List[VmStatus]
    raw: Dict[str, Any] = field(repr=False, compare=False)
    plan_digest: Optional[str] = None
    target: Optional[str] = None

    _FIELDS: ClassVar[Dict[str, str]] = {
        "plan": "plan",
        "warm": "warm",
        "started": "started",
        "completed": "completed",
        "vms": "vms",
        "planDigest": "plan_digest",
        "target": "target",
    }
    _RAW_ONLY: ClassVar[Dict[str, str]] = {}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "PlanStatus":
        """Build from the ``PlanStatus`` document (or a status file's JSON);
        :class:`ApiVersionError` for a document of another major version."""
        d = _document(d, "PlanStatus")
        return cls(
            plan=d["plan"],
            warm=d.get("warm", False),
            started=d.get("started"),
            completed=d.get("completed"),
            plan_digest=d.get("planDigest"),
            target=d.get("target"),
            vms=[
                VmStatus(
                    name=v["name"],
                    target_name=v.get("targetName", ""),
                    phase=v["phase"],
                    error=v.get("error"),
                    disks=list(v.get("disks", [])),
                    raw=v,
                )
                for v in d.get("vms", [])
            ],
            raw=d,
        )

    @property
    def migrated(self) -> int:
        """VMs that completed."""
        return sum(1 for v in self.vms if v.phase == "Completed")

    @property
    def summary(self) -> str:
        """"N of M VMs migrated"."""
        return f"{self.migrated} of {len(self.vms)} VMs migrated"


def create_lab_datastore(root: PathLike) -> str:
    """Write the lab's VMware datastore folder (the 3-tier app's VMs with sparse VMDKs) under
    ``root``; returns its path, to open as ``Source("vmx://" + path)``."""
    return _native.create_lab_datastore(os.fspath(root))


def load_status(path: PathLike) -> PlanStatus:
    """Read a status file written by a run (``status_path``) or by ``vmigrate migrate``."""
    return PlanStatus.from_dict(_document(_native.load_status(os.fspath(path)), "PlanStatus"))


# ----------------------------------------------------------------------------------------------
# Plans


_DONE = object()


class Plan:
    """A migration plan (Forklift-shaped YAML/JSON), parsed and checked.

    Parse errors raise :class:`PlanError` with code 1001 and the line in the message;
    inconsistent plans code 1002.
    """

    def __init__(self, native: _native.Plan) -> None:
        self._native = native
        self._lock = threading.Lock()
        self._migration: Optional[_native.Migration] = None
        self._cancel_requested = False

    @classmethod
    def from_file(cls, path: PathLike) -> "Plan":
        """Read a plan file (``.json`` as JSON, anything else as YAML)."""
        return cls(_native.Plan.from_file(os.fspath(path)))

    @classmethod
    def from_yaml(cls, text: str) -> "Plan":
        """Parse YAML text."""
        return cls(_native.Plan.from_yaml(text))

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        """Parse JSON text."""
        return cls(_native.Plan.from_json(text))

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Plan":
        """Build from a dict shaped like the YAML document."""
        return cls(_native.Plan.from_json(json.dumps(d)))

    @property
    def name(self) -> str:
        """``metadata.name``."""
        return self._native.name

    def to_dict(self) -> Dict[str, Any]:
        """The plan as a dict, defaults filled in."""
        result: Dict[str, Any] = json.loads(self._native.to_json())
        return result

    def validate(self, inventory: Union[Inventory, Dict[str, Any], None] = None) -> List[VmValidation]:
        """Validate every VM; against ``inventory`` when given, else the plan's own source.

        Returns one result per plan VM, in plan order; critical concerns block a VM.
        """
        if isinstance(inventory, Inventory):
            inventory = inventory.raw
        text = None if inventory is None else json.dumps(inventory)
        result = _document(self._native.validate(text), "PlanValidation")
        return [VmValidation._from(v) for v in result["vms"]]

    def run(
        self,
        progress: Optional[Callable[[Dict[str, Any]], object]] = None,
        status_path: Optional[PathLike] = None,
    ) -> PlanStatus:
        """Migrate: open the source and target, then run every VM through its pipeline.

        ``progress`` receives each event as a dict with an ``"event"`` key: ``plan``, ``phase``,
        ``disk`` (with ``progress`` counters) or ``vmDone``. ``status_path`` is written after every
        phase and resumed from. Failures of single VMs are in the returned status; raises
        :class:`CancelledError` after :meth:`cancel`, ``KeyboardInterrupt`` after cleanup on Ctrl-C.
        """
        migration = _native.Migration(self._native, None if status_path is None else os.fspath(status_path))
        with self._lock:
            self._migration = migration
            if self._cancel_requested:
                migration.cancel()
        callback = None if progress is None else (lambda text: progress(_document(text, "MigrationEvent")))
        try:
            return PlanStatus.from_dict(_document(migration.run(callback), "PlanStatus"))
        finally:
            with self._lock:
                self._cancel_requested = False
            # The run's vCenter session ends with the run (status() stays readable).
            migration.close()

    def run_iter(self, status_path: Optional[PathLike] = None) -> Iterator[Dict[str, Any]]:
        """Run in a background thread and yield its events; the final status is then
        :meth:`status`. Closing the iterator early (or Ctrl-C while waiting) cancels the run."""
        events: "queue.Queue[object]" = queue.Queue()
        outcome: Dict[str, Any] = {}

        def worker() -> None:
            try:
                outcome["status"] = self.run(progress=events.put, status_path=status_path)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer thread
                outcome["error"] = e
            finally:
                events.put(_DONE)

        thread = threading.Thread(target=worker, name=f"vmigrate-{self.name}", daemon=True)
        thread.start()
        finished = False
        try:
            while True:
                item = events.get()
                if item is _DONE:
                    finished = True
                    break
                yield item  # type: ignore[misc]
        finally:
            if not finished:
                self.cancel()
            thread.join()
        if "error" in outcome:
            raise outcome["error"]

    events = run_iter

    def cancel(self) -> None:
        """Cancel the running (or the next) :meth:`run`: thread-safe; VMs in flight are cleaned up."""
        with self._lock:
            self._cancel_requested = True
            if self._migration is not None:
                self._migration.cancel()

    def status(self) -> Optional[PlanStatus]:
        """The status of the current or last run, or None before the first."""
        with self._lock:
            migration = self._migration
        return None if migration is None else PlanStatus.from_dict(_document(migration.status(), "PlanStatus"))

    def __repr__(self) -> str:
        return f"Plan({self.name!r})"


# ----------------------------------------------------------------------------------------------
# Disk copy


@dataclass(frozen=True)
class Progress:
    """Counters of a running copy (bytes)."""

    total: int
    done: int
    copied: int
    zeroed: int
    skipped: int
    elapsed_seconds: float
    rate_bytes_per_sec: float
    eta_seconds: Optional[float]
    resumed: int = 0
    bytes_read: int = 0
    bytes_written: int = 0

    _FIELDS: ClassVar[Dict[str, str]] = {
        "total": "total",
        "done": "done",
        "copied": "copied",
        "zeroed": "zeroed",
        "skipped": "skipped",
        "elapsedSeconds": "elapsed_seconds",
        "rateBytesPerSec": "rate_bytes_per_sec",
        "etaSeconds": "eta_seconds",
        "resumed": "resumed",
        "bytesRead": "bytes_read",
        "bytesWritten": "bytes_written",
    }
    _RAW_ONLY: ClassVar[Dict[str, str]] = {"event": "always \"copy\""}

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "Progress":
        d = _document(d, "CopyProgress")
        return cls(
            resumed=d.get("resumed", 0),
            bytes_read=d.get("bytesRead", 0),
            bytes_written=d.get("bytesWritten", 0),
            total=d["total"],
            done=d["done"],
            copied=d["copied"],
            zeroed=d["zeroed"],
            skipped=d["skipped"],
            elapsed_seconds=d["elapsedSeconds"],
            rate_bytes_per_sec=d["rateBytesPerSec"],
            eta_seconds=d.get("etaSeconds"),
        )


@dataclass(frozen=True)
class CopyStats:
    """What a finished copy did."""

    bytes_read: int
    bytes_written: int
    bytes_zeroed: int
    bytes_skipped: int
    elapsed_seconds: float
    source_digest: Optional[str]
    target_digest: Optional[str]

    _FIELDS: ClassVar[Dict[str, str]] = {
        "bytesRead": "bytes_read",
        "bytesWritten": "bytes_written",
        "bytesZeroed": "bytes_zeroed",
        "bytesSkipped": "bytes_skipped",
        "elapsedSeconds": "elapsed_seconds",
        "sourceDigest": "source_digest",
        "targetDigest": "target_digest",
    }
    _RAW_ONLY: ClassVar[Dict[str, str]] = {}

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "CopyStats":
        d = _document(d, "CopyStats")
        return cls(
            bytes_read=d["bytesRead"],
            bytes_written=d["bytesWritten"],
            bytes_zeroed=d["bytesZeroed"],
            bytes_skipped=d["bytesSkipped"],
            elapsed_seconds=d["elapsedSeconds"],
            source_digest=d.get("sourceDigest"),
            target_digest=d.get("targetDigest"),
        )


def copy_disk(
    src: PathLike,
    dst: PathLike,
    progress: Optional[Callable[[Progress], object]] = None,
    verify: bool = False,
    *,
    connections: Optional[int] = None,
    request_size: Optional[int] = None,
    flush: bool = True,
    checkpoint: Optional[PathLike] = None,
    copy_file_range: bool = False,
    overwrite: bool = False,
) -> CopyStats:
    """Copy one disk image with the engine alone (sparse-aware, parallel), as ``vmigrate copy``.

    ``src``/``dst``: paths, ``nbd://`` / ``nbd+unix://`` URIs, and as a source ``http(s)://`` URLs
    or ``.vmdk`` files. A file target is created sparse. ``progress`` receives :class:`Progress`
    about five times a second and once at the end; an exception it raises cancels the copy and
    propagates (so does Ctrl-C). With ``verify`` both sides are hashed and a difference raises
    TransportError.

    The keyword options are those of ``vmigrate copy``: ``connections`` and ``request_size``
    (None: the engine's defaults), ``flush`` (False: not durable), ``copy_file_range`` (between
    two local files), and ``checkpoint``: a file where resume checkpoints are saved; a copy
    that finds one resumes from it, so re-running a failed or cancelled copy continues where it
    stopped (the same file works with the CLI and C). Bad values raise MigrationError with code
    1008 (InvalidArgument).

    A copy onto its own source (the same file through any path, the same device or NBD export)
    raises TransportError with code 4016 (SameDisk); an existing non-empty target file raises
    code 4017 (TargetExists) unless ``overwrite=True`` (a resume from ``checkpoint`` needs no
    ``overwrite``).
    """
    callback = None if progress is None else (lambda text: progress(Progress._from(_document(text, "CopyProgress"))))
    stats = _document(
        _native.copy_disk(
            os.fspath(src),
            os.fspath(dst),
            callback,
            verify,
            connections=connections,
            request_size=request_size,
            flush=flush,
            checkpoint=None if checkpoint is None else os.fspath(checkpoint),
            copy_file_range=copy_file_range,
            overwrite=overwrite,
        ),
        "CopyStats",
    )
    return CopyStats._from(stats)
