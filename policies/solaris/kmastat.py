"""illumos kmem statistics in the formats users know: the `unix:0:<cache>:kmem_cache` kstat set
(kmem_cache_kstat_update), mdb's `::kmastat` and `::kmem_slabs`, and `kstat -p` lines.

Models kmem_cache_kstat_update (seeds/002, L2978-3074) for the numbers; the ::kmastat and
::kmem_slabs layouts follow mdb's genunix module (reference spl-history-formats-papers.md C3).
Memory columns are printed in bytes (::kmastat without -k/-m/-g).
"""

from __future__ import annotations

from collections.abc import Iterable

from policies.solaris.cache import KmemCache

VMEM_IDS = {"kmem_msb": 4, "kmem_default": 6}
"""vm_id of the simulated arenas (vmem_source kstat); the numbers are illustrative."""

KSTAT_NAMES = (
    "buf_size", "align", "chunk_size", "slab_size", "alloc", "alloc_fail", "free",
    "depot_alloc", "depot_free", "depot_contention", "slab_alloc", "slab_free",
    "buf_constructed", "buf_avail", "buf_inuse", "buf_total", "buf_max", "slab_create",
    "slab_destroy", "vmem_source", "hash_size", "hash_lookup_depth", "hash_rescale",
    "full_magazines", "empty_magazines", "magazine_size", "move_callbacks", "move_yes",
    "move_no", "move_later", "move_dont_need", "move_dont_know", "move_hunt_found",
)
"""kmem_cache_kstat member names in the seed's order (L837-905)."""


def kmem_cache_kstat(cp: KmemCache) -> dict[str, int]:
    """The kstat values of one cache, computed as kmem_cache_kstat_update does: `alloc` and
    `free` include the depot's ml_alloc counts, `buf_constructed` counts CPU rounds and full
    depot magazines."""
    cc_alloc = sum(c.cc_alloc for c in cp.cache_cpu)
    cc_free = sum(c.cc_free for c in cp.cache_cpu)
    constructed = cp.buf_constructed()
    avail = constructed + cp.cache_bufslab
    d = cp.cache_defrag
    return {
        "buf_size": cp.spec.size,
        "align": cp.align,
        "chunk_size": cp.chunksize,
        "slab_size": cp.slabsize,
        "alloc": cp.cache_slab_alloc + cc_alloc + cp.cache_full.ml_alloc,
        "alloc_fail": cp.cache_alloc_fail,
        "free": cp.cache_slab_free + cc_free + cp.cache_empty.ml_alloc,
        "depot_alloc": cp.cache_full.ml_alloc,
        "depot_free": cp.cache_empty.ml_alloc,
        "depot_contention": cp.cache_depot_contention,
        "slab_alloc": cp.cache_slab_alloc,
        "slab_free": cp.cache_slab_free,
        "buf_constructed": constructed,
        "buf_avail": avail,
        "buf_inuse": cp.cache_buftotal - avail,
        "buf_total": cp.cache_buftotal,
        "buf_max": cp.cache_bufmax,
        "slab_create": cp.cache_slab_create,
        "slab_destroy": cp.cache_slab_destroy,
        "vmem_source": VMEM_IDS[cp.arena],
        "hash_size": cp.hash.mask + 1 if cp.hash is not None else 0,
        "hash_lookup_depth": cp.cache_lookup_depth,
        "hash_rescale": cp.cache_rescale,
        "full_magazines": cp.cache_full.ml_total,
        "empty_magazines": cp.cache_empty.ml_total,
        "magazine_size": 0 if cp.nomagazine else cp.cache_magtype.mt_magsize,
        "move_callbacks": d.kmd_callbacks if d else 0,
        "move_yes": d.kmd_yes if d else 0,
        "move_no": d.kmd_no if d else 0,
        "move_later": d.kmd_later if d else 0,
        "move_dont_need": d.kmd_dont_need if d else 0,
        "move_dont_know": d.kmd_dont_know if d else 0,
        "move_hunt_found": d.kmd_hunt_found if d else 0,
    }


RULE = "------------------------- ------ ------ ------ ---------- --------- -----"
VRULE = "------------------------- ---------- ----------- ---------- --------- -----"


def format_kmastat(caches: Iterable[KmemCache], vmem_fail: dict[str, int]) -> str:
    """::kmastat: one line per cache (name, buf size, buf in use, buf total, memory in use,
    alloc succeed, alloc fail), a `Total [arena]` line per arena, then the vmem section."""
    out = ["cache                        buf    buf    buf    memory     alloc alloc",
           "name                        size in use  total    in use   succeed  fail",
           RULE]
    totals: dict[str, list[int]] = {}
    for cp in caches:
        ks = kmem_cache_kstat(cp)
        mem = (cp.cache_slab_create - cp.cache_slab_destroy) * cp.slabsize
        out.append(f"{cp.name:<25} {ks['buf_size']:>6} {ks['buf_inuse']:>6} "
                   f"{ks['buf_total']:>6} {mem:>10} {ks['alloc']:>9} {ks['alloc_fail']:>5}")
        tot = totals.setdefault(cp.arena, [0, 0, 0, 0])
        tot[0] += mem
        tot[1] += ks["alloc"]
        tot[2] += ks["alloc_fail"]
        tot[3] += cp.cache_slab_create
    out.append(RULE)
    for arena, (mem, alloc, fail, _) in totals.items():
        label = f"Total [{arena}]"
        out.append(f"{label:<46} {mem:>10} {alloc:>9} {fail:>5}")
    out += ["", "vmem                         memory     memory    memory     alloc alloc",
            "name                         in use      total    import   succeed  fail", VRULE]
    heap_mem = sum(v[0] for v in totals.values())
    heap_allocs = sum(v[3] for v in totals.values())
    heap_fail = sum(vmem_fail.values())
    out.append(f"{'heap':<25} {heap_mem:>10} {heap_mem:>11} {0:>10} {heap_allocs:>9} "
               f"{heap_fail:>5}")
    for arena, (mem, _alloc, _fail, creates) in totals.items():
        name = "    " + arena
        out.append(f"{name:<25} {mem:>10} {mem:>11} {mem:>10} {creates:>9} "
                   f"{vmem_fail.get(arena, 0):>5}")
    return "\n".join(out) + "\n"


def format_kmem_slabs(caches: Iterable[KmemCache]) -> str:
    """::kmem_slabs: slabs, partial slabs, buffers, unused buffers and waste per cache."""
    out = [f"{'Cache Name':<25} {'Slabs':>9} {'Partial Slabs':>13} {'Buffers':>9} "
           f"{'Unused Buffers':>14} {'Waste':>5}",
           f"{'-' * 25} {'-' * 9} {'-' * 13} {'-' * 9} {'-' * 14} {'-' * 5}"]
    for cp in caches:
        slabs = len(cp.complete) + len(cp.partial)
        unused = cp.cache_bufslab
        waste = f"{100.0 * unused / cp.cache_buftotal:.1f}%" if cp.cache_buftotal else "0.0%"
        out.append(f"{cp.name:<25} {slabs:>9} {len(cp.partial):>13} {cp.cache_buftotal:>9} "
                   f"{unused:>14} {waste:>5}")
    return "\n".join(out) + "\n"


def format_kstat_p(caches: Iterable[KmemCache]) -> str:
    """`kstat -p -c kmem_cache`: one `unix:0:<cache>:<stat>\\t<value>` line per statistic."""
    lines = []
    for cp in caches:
        for name, value in kmem_cache_kstat(cp).items():
            lines.append(f"unix:0:{cp.name}:{name}\t{value}")
    return "\n".join(lines) + "\n"
