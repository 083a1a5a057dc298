#!/usr/bin/env python3
"""pyvmomi side of benches/src/bin/inventory_bench.rs.

Lists the inventory the way a careful pyvmomi user does (and the way vmigrate does): one
ContainerView over the root folder, then PropertyCollector.RetrievePropertiesEx /
ContinueRetrievePropertiesEx with exactly the property set vmigrate asks for (given as JSON on
stdin), maxObjects as vmigrate uses. Round trips are counted at pyvmomi's own stub adapter:
every SOAP call goes through SoapStubAdapter.InvokeMethod.

Prints one JSON line: {"best_secs", "secs", "round_trips", "objects", "vms"}.
"""
import argparse
import json
import os
import ssl
import sys
import time
from urllib.parse import urlparse

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import SoapStubAdapter, vim, vmodl

CALLS = {"n": 0}
_invoke = SoapStubAdapter.InvokeMethod


def _counting_invoke(self, *args, **kwargs):
    CALLS["n"] += 1
    return _invoke(self, *args, **kwargs)


SoapStubAdapter.InvokeMethod = _counting_invoke


def inventory(content, view_types, props, page):
    view = content.viewManager.CreateContainerView(content.rootFolder, [getattr(vim, t) for t in view_types], True)
    try:
        traverse = vmodl.query.PropertyCollector.TraversalSpec(name="traverseView", path="view", skip=False, type=vim.view.ContainerView)
        obj_spec = vmodl.query.PropertyCollector.ObjectSpec(obj=view, skip=True, selectSet=[traverse])
        prop_set = [vmodl.query.PropertyCollector.PropertySpec(type=getattr(vim, t if t != "DistributedVirtualPortgroup" else "dvs.DistributedVirtualPortgroup"), pathSet=list(paths)) for t, paths in props]
        spec = vmodl.query.PropertyCollector.FilterSpec(objectSet=[obj_spec], propSet=prop_set)
        pc = content.propertyCollector
        result = pc.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=page))
        objects = []
        while result is not None:
            for o in result.objects:
                objects.append((o.obj, {p.name: p.val for p in (o.propSet or [])}))
            if not result.token:
                break
            result = pc.ContinueRetrievePropertiesEx(result.token)
        return objects
    finally:
        view.DestroyView()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--username", required=True)
    ap.add_argument("--password-env", default="VMIGRATE_BENCH_PASSWORD")
    ap.add_argument("--ca-file", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--page", type=int, default=1000)
    args = ap.parse_args()
    spec = json.load(sys.stdin)

    u = urlparse(args.url)
    ctx = ssl.create_default_context(cafile=args.ca_file)
    si = SmartConnect(host=u.hostname, port=u.port or 443, user=args.username, pwd=os.environ[args.password_env], sslContext=ctx)
    try:
        content = si.RetrieveContent()  # once, as vmigrate's connect does
        times, trips, objects = [], [], []
        for _ in range(args.runs):
            before = CALLS["n"]
            t = time.perf_counter()
            objects = inventory(content, spec["view_types"], spec["props"], args.page)
            times.append(time.perf_counter() - t)
            trips.append(CALLS["n"] - before)
        vms = sum(1 for o, _ in objects if isinstance(o, vim.VirtualMachine))
        print(json.dumps({"best_secs": min(times), "secs": times, "round_trips": trips[-1], "objects": len(objects), "vms": vms}))
    finally:
        Disconnect(si)


if __name__ == "__main__":
    main()
