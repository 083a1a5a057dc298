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
:class:`MigrationError` subclasses, one per range of the error-code table shared with Rust and C
(:class:`PlanError`, :class:`SourceError`, :class:`TargetError`, :class:`TransportError`,
:class:`ExecutionError`, :class:`InternalError`), carrying ``.code`` (the number), ``.name`` and
``.kind``. ``VsphereError`` and ``KubevirtError``, the names of the source and target classes
before the ranges were named by role, are the same classes.

Every JSON document the native module hands over carries ``apiVersion`` (``vmigrate.dev/v1alpha1``)
and ``kind`` (docs/wire-format.md); a document of another major version raises
:class:`ApiVersionError` instead of being misread. The objects returned (:class:`Inventory`,
:class:`Vm`, :class:`PlanStatus`, :class:`CopyStats`, ...) are read-only views of those documents
(:class:`WireObject`): every key is an attribute under its snake_case name (``disk.capacity_bytes``
reads ``capacityBytes``), also ``obj["capacityBytes"]``; ``.raw`` is the dict and ``.json()`` the
text.

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
import reprlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    ClassVar,
    Dict,
    FrozenSet,
    Iterator,
    List,
    Optional,
    Tuple,
    Type,
    TypeVar,
    Union,
    get_args,
    get_type_hints,
)

from . import _native
from ._native import (
    CancelledError,
    ExecutionError,
    InternalError,
    MigrationError,
    PlanError,
    SourceError,
    TargetError,
    TransportError,
)

__version__: str = _native.__version__

__all__ = [
    "API_VERSION",
    "ApiVersionError",
    "CancelledError",
    "Concern",
    "CopyProgress",
    "CopyStats",
    "Datastore",
    "Disk",
    "ErrorCode",
    "ErrorRange",
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
    "PlanValidation",
    "Progress",
    "Source",
    "SourceError",
    "TargetError",
    "TransportError",
    "Vm",
    "VmStatus",
    "VmValidation",
    "VsphereError",
    "WireObject",
    "copy_disk",
    "create_lab_datastore",
    "error_code",
    "error_codes",
    "error_ranges",
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
    the bare model (as earlier releases' ``vmigrate inventory --output json`` printed it) and is
    accepted."""
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


VsphereError = SourceError
"""Old name of :class:`SourceError` (the 2000 range was named ``vsphere``), kept for compatibility."""

KubevirtError = TargetError
"""Old name of :class:`TargetError` (the 3000 range was named ``kubevirt``), kept for compatibility."""


@dataclass(frozen=True)
class ErrorCode:
    """One entry of the stable error-code table (the numbers C returns as ``vmigrate_result``).

    ``name`` is the current name; ``old_names`` are names the same number had before a rename
    (``VsphereInvalidLogin`` for ``SourceInvalidLogin``), which :func:`error_code` still accepts.
    Match on ``code``: numbers never change."""

    code: int
    name: str
    range: str
    kind: str
    description: str
    old_names: Tuple[str, ...] = ()


_RANGE_CLASSES: Dict[str, Type[MigrationError]] = {
    "plan": PlanError,
    "source": SourceError,
    "target": TargetError,
    "transport": TransportError,
    "execution": ExecutionError,
    "internal": InternalError,
}


@dataclass(frozen=True)
class ErrorRange:
    """A range of the error-code table, by role: the numbers ``first``..``last`` and the
    exception class raised for them. ``old_names`` are the range's names before ranges were named
    by role (``vsphere`` for ``source``, ``kubevirt`` for ``target``)."""

    name: str
    first: int
    last: int
    old_names: Tuple[str, ...]
    exception: Type[MigrationError]


def error_ranges() -> List[ErrorRange]:
    """Every range of the error-code table, in numeric order."""
    return [
        ErrorRange(name, first, last, tuple(old), _RANGE_CLASSES[name])
        for name, first, last, old in _native.error_ranges()
    ]


def _range_name(name: str) -> str:
    for r in _native.error_ranges():
        if name == r[0] or name in r[3]:
            return str(r[0])
    raise KeyError(f"{name!r} is not an error-code range")


def error_codes(range: Optional[str] = None) -> List[ErrorCode]:
    """Every error code, in numeric order; only those of ``range`` when given (a range name, or
    an old one: ``"vsphere"`` is ``"source"``). An unknown range raises ``KeyError``."""
    old: Dict[int, List[str]] = {}
    for name, code in _native.error_code_old_names():
        old.setdefault(code, []).append(name)
    codes = [ErrorCode(*row, old_names=tuple(old.get(row[0], ()))) for row in _native.error_codes()]
    if range is None:
        return codes
    wanted = _range_name(range)
    return [c for c in codes if c.range == wanted]


def error_code(key: Union[int, str]) -> ErrorCode:
    """The table entry of a number, a name, or an old name (``"VsphereInvalidLogin"`` gives the
    entry of 2003, ``SourceInvalidLogin``). An unknown one raises ``KeyError``."""
    for c in error_codes():
        if key == c.code or key == c.name or key in c.old_names:
            return c
    raise KeyError(f"{key!r} is not a vmigrate error code")


# ----------------------------------------------------------------------------------------------
# Wire objects: read-only views over the documents (no field lists to keep in step with Rust)


_CAMEL = re.compile(r"_([a-z0-9])")
_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")


def _camel(name: str) -> str:
    """``capacity_bytes`` → ``capacityBytes``: the wire key of a Python attribute name."""
    return _CAMEL.sub(lambda m: m.group(1).upper(), name)


def _snake(key: str) -> str:
    """``capacityBytes`` → ``capacity_bytes``: the Python attribute name of a wire key."""
    return _SNAKE.sub("_", key).lower()


_W = TypeVar("_W", bound="WireObject")


_ANNOTATIONS: Dict[type, Tuple[FrozenSet[str], Dict[str, type]]] = {}


def _annotations(cls: type) -> Tuple[FrozenSet[str], Dict[str, type]]:
    """What a class's own type annotations say, read once per class: the attribute names it
    annotates (an absent one reads as ``None``), and the wire keys whose objects it wraps in a
    subclass (``Inventory.vms: List[Vm]``: ``vms`` → ``Vm``), so the annotation is the only
    place that says it."""
    found = _ANNOTATIONS.get(cls)
    if found is None:
        names, children = set(), {}
        for name, hint in get_type_hints(cls).items():
            if name.startswith("_"):
                continue
            names.add(name)
            todo = [hint]
            while todo:
                t = todo.pop()
                if isinstance(t, type) and issubclass(t, WireObject):
                    children[_camel(name)] = t
                    break
                todo.extend(get_args(t))
        found = _ANNOTATIONS[cls] = (frozenset(names), children)
    return found


def _wrap(value: Any, cls: type) -> Any:
    if isinstance(value, dict):
        return cls(value)
    if isinstance(value, list):
        return [_wrap(v, cls) for v in value]
    return value


_REPR_FIRST = {"name": 0, "plan": 1, "phase": 2}


class WireObject(Mapping[str, Any]):
    """A read-only view of one JSON object of a wire document (docs/wire-format.md).

    Every key is an attribute under its snake_case name (``disk.capacity_bytes`` reads
    ``capacityBytes``; the camelCase name works too), so a key the library adds is readable here
    without a new release of this layer. Nested objects are views too (made on first access),
    lists are lists. It is also a read-only mapping of the wire keys (``obj["capacityBytes"]``,
    ``obj.get(...)``, ``in``, ``dict(obj)``); ``.raw`` is the parsed document itself (do not
    change it) and ``.json()`` its JSON text. Two views are equal when their documents are, and a
    view equals a dict of the same content.

    The public classes (:class:`Inventory`, :class:`Vm`, :class:`PlanStatus`, ...) are subclasses
    that add computed properties (``Vm.cpus``, ``PlanStatus.summary``) and the type annotations
    mypy reads; an optional key the document leaves out (a ``null``) reads as ``None`` when the
    class annotates it, and an unknown name raises ``AttributeError``.
    """

    _KIND: ClassVar[Optional[str]] = None

    def __init__(self, raw: Dict[str, Any]) -> None:
        object.__setattr__(self, "_raw", raw)
        object.__setattr__(self, "_views", {})

    @classmethod
    def from_dict(cls: Type[_W], data: Union[str, Dict[str, Any]]) -> _W:
        """A view of a document (a dict or its JSON text); for the top-level kinds its
        ``apiVersion`` and ``kind`` are checked (:class:`ApiVersionError`), and a dict without
        ``apiVersion`` is read as the bare model of earlier releases."""
        if cls._KIND is not None:
            return cls(_document(data, cls._KIND))
        d = json.loads(data) if isinstance(data, str) else data
        if not isinstance(d, dict):
            raise TypeError(f"a {cls.__name__} is a JSON object, got {type(d).__name__}")
        return cls(d)

    @property
    def raw(self) -> Dict[str, Any]:
        """The object as parsed from the wire (camelCase keys): read it, do not change it."""
        raw: Dict[str, Any] = self.__dict__["_raw"]
        return raw

    def json(self, **kwargs: Any) -> str:
        """The object as JSON text (``kwargs`` go to :func:`json.dumps`, e.g. ``indent=2``)."""
        return json.dumps(self.raw, **kwargs)

    def __getitem__(self, key: str) -> Any:
        views: Dict[str, Any] = self.__dict__["_views"]
        if key not in views:
            value = self.raw[key]
            views[key] = _wrap(value, _annotations(type(self))[1].get(key, WireObject))
        return views[key]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raw = self.raw
        key = name if name in raw else _camel(name)
        if key in raw:
            return self[key]
        if name in _annotations(type(self))[0]:
            return None
        raise AttributeError(f"{type(self).__name__} has no key {key!r} (keys: {', '.join(raw)})")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def __contains__(self, key: object) -> bool:
        return key in self.raw

    def __eq__(self, other: object) -> bool:
        if isinstance(other, WireObject):
            return self.raw == other.raw
        if isinstance(other, dict):
            return self.raw == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(json.dumps(self.raw, sort_keys=True))

    def __dir__(self) -> List[str]:
        return sorted(set(super().__dir__()) | {_snake(k) for k in self.raw})

    def __repr__(self) -> str:
        shown = [(k, v) for k, v in self.raw.items() if not (k == "apiVersion" or (k == "kind" and self._KIND))]
        shown.sort(key=lambda kv: _REPR_FIRST.get(kv[0], len(_REPR_FIRST)))  # stable: name first
        r = reprlib.Repr()
        r.maxlevel, r.maxlist, r.maxdict, r.maxstring = 1, 2, 2, 60
        parts = [f"{_snake(k)}={r.repr(v)}" for k, v in shown[:6]]
        if len(shown) > 6:
            parts.append("...")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.raw,))


# ----------------------------------------------------------------------------------------------
# Inventory (attribute annotations: the keys users rely on, for mypy; every other key reads too)


class Disk(WireObject):
    """A virtual disk of a source VM."""

    key: int
    label: str
    capacity_bytes: int
    file: str
    datastore: Optional[str]
    thin: bool


class Nic(WireObject):
    """A network interface of a source VM."""

    key: int
    mac: str
    network: Optional[str]
    model: str
    ip_addresses: List[str]


class Vm(WireObject):
    """A source VM as the inventory describes it."""

    name: str
    power_state: str
    guest_id: str
    firmware: str
    memory_mib: int
    disks: List[Disk]
    nics: List[Nic]

    @property
    def id(self) -> str:
        """The source's reference to the VM, as text (the whole identity, with its UUIDs, is
        ``vm["id"]``): the id's ``sourceRef``, else its one reference that is not a UUID."""
        ident = self.raw.get("id")
        if not isinstance(ident, dict):
            return "" if ident is None else str(ident)
        ref = ident.get("sourceRef")
        if ref is None:
            ref = next((v for k, v in ident.items() if isinstance(v, str) and not k.endswith("Uuid")), "")
        return str(ref)

    @property
    def cpus(self) -> int:
        """Virtual CPUs: sockets × cores per socket."""
        return int(self.raw.get("cpuSockets", 1)) * int(self.raw.get("coresPerSocket", 1))


class Network(WireObject):
    """A source network (port group, distributed port group, NSX segment)."""

    id: str
    name: str
    kind: str


class Datastore(WireObject):
    """A source datastore."""

    id: str
    name: str
    kind: str
    capacity_bytes: int
    free_bytes: int


class Host(WireObject):
    """A source host."""

    id: str
    name: str
    cluster: Optional[str]


class Inventory(WireObject):
    """What a source holds: the ``Inventory`` document."""

    _KIND = "Inventory"

    vms: List[Vm]
    networks: List[Network]
    datastores: List[Datastore]
    hosts: List[Host]

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
        return Inventory.from_dict(self._native.inventory_json())

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


class Concern(WireObject):
    """One validation finding: a stable id, a severity (info, warning, critical), a message."""

    id: str
    severity: str
    message: str


class VmValidation(WireObject):
    """The validation result of one VM of a plan."""

    name: str
    source_id: Optional[str]
    target_name: str
    concerns: List[Concern]

    @property
    def blocked(self) -> bool:
        """Whether a critical concern blocks this VM."""
        return any(c.severity == "critical" for c in self.concerns)


class PlanValidation(WireObject):
    """The ``PlanValidation`` document: ``blocked`` and one :class:`VmValidation` per plan VM."""

    _KIND = "PlanValidation"

    blocked: bool
    vms: List[VmValidation]


class VmStatus(WireObject):
    """Where one VM of a run is."""

    name: str
    target_name: str
    phase: str
    error: Optional[WireObject]
    disks: List[WireObject]


class PlanStatus(WireObject):
    """The status of a plan run (also what the status file holds): the ``PlanStatus`` document."""

    _KIND = "PlanStatus"

    plan: str
    warm: bool
    started: Optional[str]
    completed: Optional[str]
    vms: List[VmStatus]
    plan_digest: Optional[str]
    target: Optional[str]

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
    return PlanStatus.from_dict(_native.load_status(os.fspath(path)))


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
        return PlanValidation.from_dict(self._native.validate(text)).vms

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
            return PlanStatus.from_dict(migration.run(callback))
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
        return None if migration is None else PlanStatus.from_dict(migration.status())

    def __repr__(self) -> str:
        return f"Plan({self.name!r})"


# ----------------------------------------------------------------------------------------------
# Disk copy


class Progress(WireObject):
    """Counters of a running copy (bytes): the ``CopyProgress`` document."""

    _KIND = "CopyProgress"

    total: int
    done: int
    copied: int
    zeroed: int
    skipped: int
    elapsed_seconds: float
    rate_bytes_per_sec: float
    eta_seconds: Optional[float]
    resumed: int
    bytes_read: int
    bytes_written: int


CopyProgress = Progress
"""The name of :class:`Progress` after its document's kind."""


class CopyStats(WireObject):
    """What a finished copy did: the ``CopyStats`` document."""

    _KIND = "CopyStats"

    bytes_read: int
    bytes_written: int
    bytes_zeroed: int
    bytes_skipped: int
    elapsed_seconds: float
    source_digest: Optional[str]
    target_digest: Optional[str]


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
    callback = None if progress is None else (lambda text: progress(Progress.from_dict(text)))
    stats = _native.copy_disk(
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
    )
    return CopyStats.from_dict(stats)
