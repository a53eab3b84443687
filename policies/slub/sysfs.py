"""SLUB's reports: /proc/slabinfo 2.1 as SLUB prints it (get_slabinfo: every slab counts as
active, only free objects on the node partial lists are inactive, tunables 0 0 0, no
statistics) and /sys/kernel/slab/<cache>/ as `grep . /sys/kernel/slab/<cache>/*` prints it:
the attributes of slab_attrs (show_slab_objects, slabs_cpu_partial_show, ...) and the
CONFIG_SLUB_STATS files (show_stat: the sum, then C<cpu>=<n> for every CPU with a count)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from policies.slabinfo import format_slabinfo
from policies.slub.structs import STAT_ITEMS, SlubCache


def slabinfo_stats(p: Any, s: SlubCache) -> Any:
    """The common numbers reshaped for get_slabinfo: active_objs = objects - free objects on
    node partial lists, active_slabs = num_slabs, objsize = s->size, tunables 0 0 0."""
    st = p.stats(s)
    node_free = sum(sl.objects - sl.inuse for n in s.node for sl in n.partial)
    objs = sum(n.total_objects for n in s.node)
    slabs = sum(n.nr_slabs for n in s.node)
    return replace(st, obj_size=s.size, objs_free=node_free, slabs=slabs, slabs_empty=0,
                   objs_per_slab=s.geo.objects, pages_per_slab=s.geo.pages, limit=0,
                   batchcount=0, shared=0, shared_avail=0,
                   objs_inuse=objs - node_free, objs_cached=0)


def format_slub_slabinfo(p: Any, caches: list[SlubCache]) -> str:
    """/proc/slabinfo 2.1 for SLUB (slab_caches order: newest first)."""
    return format_slabinfo([slabinfo_stats(p, s) for s in caches])


def _per_node(total: int, nodes: list[int]) -> str:
    """show_slab_objects' value: the total, then N<node>=<n> on NUMA machines."""
    out = str(total)
    if len(nodes) > 1:
        out += "".join(f" N{i}={v}" for i, v in enumerate(nodes) if v)
    return out


def sysfs_attributes(p: Any, s: SlubCache) -> dict[str, str]:
    """The /sys/kernel/slab/<cache>/ files and their contents."""
    geo = s.geo
    nnodes = len(s.node)
    cpu_slabs = [0] * nnodes
    for c in s.cpu_slab:
        if c.slab is not None:
            cpu_slabs[c.slab.node] += 1
            if c.partial:
                cpu_slabs[c.partial[-1].node] += len(c.partial)
    partial_inuse = [sum(sl.inuse for sl in n.partial) for n in s.node]
    partial_free = [sum(sl.objects - sl.inuse for sl in n.partial) for n in s.node]
    pslabs = sum(len(c.partial) for c in s.cpu_slab)
    cpu_part = f"{pslabs * geo.objects // 2}({pslabs})" + "".join(
        f" C{c.cpu}={len(c.partial) * geo.objects // 2}({len(c.partial)})"
        for c in s.cpu_slab if c.partial)
    attrs = {
        "aliases": "0",
        "align": str(geo.align),
        "cpu_partial": str(s.cpu_partial),
        "cpu_slabs": _per_node(sum(cpu_slabs), cpu_slabs),
        "destroy_by_rcu": "0",
        "hwcache_align": str(int("SLAB_HWCACHE_ALIGN" in s.spec.flags)),
        "min_partial": str(s.min_partial),
        "object_size": str(geo.object_size),
        "objects": _per_node(sum(n.total_objects for n in s.node) - sum(partial_free),
                             [n.total_objects - f for n, f in zip(s.node, partial_free,
                                                                  strict=True)]),
        "objects_partial": _per_node(sum(partial_inuse), partial_inuse),
        "objs_per_slab": str(geo.objects),
        "order": str(geo.order),
        "partial": _per_node(sum(n.nr_partial for n in s.node), [n.nr_partial for n in s.node]),
        "poison": "0",
        "reclaim_account": str(int("SLAB_RECLAIM_ACCOUNT" in s.spec.flags)),
        "red_zone": "0",
        "remote_node_defrag_ratio": str(s.remote_node_defrag_ratio // 10),
        "sanity_checks": "0",
        "sheaf_capacity": str(s.sheaf_capacity),
        "slab_size": str(geo.size),
        "slabs": _per_node(sum(n.nr_slabs for n in s.node), [n.nr_slabs for n in s.node]),
        "slabs_cpu_partial": cpu_part,
        "store_user": "0",
        "total_objects": _per_node(sum(n.total_objects for n in s.node),
                                   [n.total_objects for n in s.node]),
        "trace": "0",
    }
    for i, name in enumerate(STAT_ITEMS):
        total = s.total(i)
        attrs[name] = str(total) + "".join(f" C{c.cpu}={c.stat[i]}" for c in s.cpu_slab
                                           if c.stat[i])
    return attrs


def format_sys_kernel_slab(p: Any, caches: list[SlubCache]) -> str:
    """Every cache's /sys/kernel/slab files as `grep . /sys/kernel/slab/<cache>/*` prints
    them (path:value, files in name order)."""
    lines = []
    for s in caches:
        for name, value in sorted(sysfs_attributes(p, s).items()):
            lines.append(f"/sys/kernel/slab/{s.name}/{name}:{value}")
    return "\n".join(lines) + "\n"
