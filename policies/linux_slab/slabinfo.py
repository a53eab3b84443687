"""/proc/slabinfo 2.1 as Linux 2.6.17 print_slabinfo_header / s_show print it (seed 003
3784-3930): the plain layout, or with STATS (a CONFIG_DEBUG_SLAB build) the (statistics) layout
with the globalstat and cpustat groups."""

from __future__ import annotations

from typing import Any

from policies.linux_slab.structs import LinuxCache
from policies.slabinfo import format_slabinfo


def slabinfo_line(p: Any, c: LinuxCache) -> str:
    """One s_show line with the statistics groups (2.6.17 layout, embedded tabs included)."""
    st = p.stats(c)
    num_objs = st.slabs * c.geo.num
    active_objs = num_objs - st.objs_free
    active_slabs = st.slabs - st.slabs_empty
    return (f"{c.name:<17} {active_objs:6d} {num_objs:6d} {c.geo.buffer_size:6d} "
            f"{c.geo.num:4d} {c.geo.pages:4d} : tunables {c.limit:4d} {c.batchcount:4d} "
            f"{c.shared:4d} : slabdata {active_slabs:6d} {st.slabs:6d} {st.shared_avail:6d}"
            f" : globalstat {c.num_allocations:7d} {c.high_mark:6d} {c.grown:5d} {c.reaped:4d} "
            f"\t\t\t\t{c.errors:4d} {c.max_freeable:4d} {c.node_allocs:4d} {c.node_frees:4d} "
            f"{c.node_overflow:4d} : cpustat {c.allochit:6d} {c.allocmiss:6d} {c.freehit:6d} "
            f"{c.freemiss:6d}")


def format_slabinfo_2617(p: Any, caches: list[LinuxCache]) -> str:
    """/proc/slabinfo in cache_chain order (newest first): the (statistics) layout when the
    policy's STATS is on, else the plain 2.1 layout (seed 003 3790-3803)."""
    if not p.tun["STATS"]:
        return format_slabinfo([p.stats(c) for c in caches])
    lines = ["slabinfo - version: 2.1 (statistics)",
             "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab>"
             " : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs>"
             " <num_slabs> <sharedavail> : globalstat <listallocs> <maxobjs> <grown> <reaped>"
             " <error> <maxfreeable> <nodeallocs> <remotefrees> <alienoverflow>"
             " : cpustat <allochit> <allocmiss> <freehit> <freemiss>"]
    lines += [slabinfo_line(p, c) for c in caches]
    return "\n".join(lines) + "\n"
