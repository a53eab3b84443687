"""/proc/slabinfo version 2.1 (mm/slab_common.c cache_show) from the common per-cache numbers:
the format the Linux policies and the SPL's KMC_SLAB caches print."""

from __future__ import annotations

from policies.base import CacheStats


def slabinfo_row(s: CacheStats) -> str:
    """One /proc/slabinfo 2.1 line (layout of mm/slab_common.c cache_show)."""
    num_objs = s.slabs * s.objs_per_slab
    active_objs = num_objs - s.objs_free
    active_slabs = s.slabs - s.slabs_empty
    tunables = (f"{s.limit:4d} {s.batchcount:4d} {s.shared:4d}" if s.tunables_apply
                else f"{'n/a':>4} {'n/a':>4} {'n/a':>4}")
    return (f"{s.name:<17} {active_objs:6d} {num_objs:6d} {s.obj_size:6d} {s.objs_per_slab:4d} "
            f"{s.pages_per_slab:4d} : tunables {tunables} "
            f": slabdata {active_slabs:6d} {s.slabs:6d} {s.shared_avail:6d}")


def format_slabinfo(stats: list[CacheStats]) -> str:
    """/proc/slabinfo version 2.1 from the common per-cache numbers."""
    lines = ["slabinfo - version: 2.1",
             "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab>"
             " : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs>"
             " <num_slabs> <sharedavail>"]
    lines += [slabinfo_row(s) for s in stats]
    return "\n".join(lines) + "\n"
