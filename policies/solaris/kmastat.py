"""illumos kmem statistics in the formats users know: the `unix:0:<cache>:kmem_cache` kstat set
(kmem_cache_kstat_update), mdb's `::kmastat` and `::kmem_slabs`, and `kstat -p` lines.

Models kmem_cache_kstat_update (seeds/002, L2978-3074) for the numbers. ::kmastat follows the
illumos-gate mdb genunix module's `kmastat` dcmd in the version that prints memory with a unit
suffix (kmemfmt / vmemfmt with `%10lu%c` / `%9llu%c`; the -k/-m/-g options of 2010 onwards;
here without an option, so the suffix is `B`): the cache table (every column followed by a
space), a dash rule, one `Total [arena]` line per arena in vmem-walk order that has
allocations (kmastat_vmem_totals skips kv_alloc == 0), a dash rule, an empty line, then the
vmem table with children indented 4 per ancestor and a closing dash rule. The arena numbers come
from the vmem model (policies/solaris/vmem.py). ::kmem_slabs follows the reference's C3 layout.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from policies.solaris.cache import KmemCache

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
    depot magazines, here with the rounds of a magazine between a CPU and the depot
    (`KmemCache.cc_transit`): the seed reads each CPU under its cc_lock (L3003), which the
    exchange holds, so it sees them on the CPU."""
    cc_alloc = sum(c.cc_alloc for c in cp.cache_cpu)
    cc_free = sum(c.cc_free for c in cp.cache_cpu)
    constructed = cp.buf_constructed() + cp.cc_transit
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
        "vmem_source": cp.arena_id,
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


KMEMFMT = (("cache                    ", "name                     ", 25),
           ("   buf", "  size", 6), ("   buf", "in use", 6), ("   buf", " total", 6),
           ("   memory", "   in use", 10), ("    alloc", "  succeed", 9), ("alloc", " fail", 5))
"""::kmastat cache columns: header lines and dash widths."""
VMEMFMT = (("vmem                     ", "name                     ", 25),
           ("   memory", "   in use", 10), ("    memory", "     total", 11),
           ("   memory", "   import", 10), ("    alloc", "  succeed", 9), ("alloc", " fail", 5))
"""::kmastat vmem columns."""


def _rows(fmt: tuple[tuple[str, str, int], ...]) -> list[str]:
    return ["".join(f"{h1} " for h1, _h2, _w in fmt), "".join(f"{h2} " for _h1, h2, _w in fmt),
            _dashes(fmt)]


def _dashes(fmt: tuple[tuple[str, str, int], ...]) -> str:
    return "".join(f"{'-' * w} " for _h1, _h2, w in fmt)


def format_kmastat(caches: Iterable[KmemCache], arenas: list[tuple[int, Any]]) -> str:
    """::kmastat: one line per cache in kmem_caches order (name, buf size, buf in use, buf
    total, memory in use, alloc succeed, alloc fail), the `Total [arena]` lines, then the vmem
    table of `arenas` ((depth, VmemArena) parents first)."""
    out = _rows(KMEMFMT)
    totals: dict[str, list[int]] = {}
    for cp in caches:
        ks = kmem_cache_kstat(cp)
        mem = (cp.cache_slab_create - cp.cache_slab_destroy) * cp.slabsize
        out.append(f"{cp.name:<25} {ks['buf_size']:6d} {ks['buf_inuse']:6d} "
                   f"{ks['buf_total']:6d} {mem:10d}B {ks['alloc']:9d} {ks['alloc_fail']:5d} ")
        tot = totals.setdefault(cp.arena, [0, 0, 0])
        tot[0] += mem
        tot[1] += ks["alloc"]
        tot[2] += ks["alloc_fail"]
    out.append(_dashes(KMEMFMT))
    for _depth, vmp in arenas:
        mem, alloc, fail = totals.get(vmp.name, (0, 0, 0))
        if not alloc:
            continue
        pad = " " * (17 - min(17, len(vmp.name)))
        out.append(f"Total [{vmp.name}]{pad} {'':6} {'':6} {'':6} {mem:10d}B {alloc:9d} "
                   f"{fail:5d}")
    out.append(_dashes(KMEMFMT))
    out.append("")
    out += _rows(VMEMFMT)
    for depth, vmp in arenas:
        ident = 4 * depth
        out.append(f"{'':{ident}}{vmp.name:<{25 - ident}} {vmp.vk_mem_inuse:9d}B "
                   f"{vmp.vk_mem_total:10d}B {vmp.vk_mem_import:9d}B {vmp.vk_alloc:9d} "
                   f"{vmp.vk_fail:5d} ")
    out.append(_dashes(VMEMFMT))
    return "\n".join(out) + "\n"


VMEM_ADDR_BASE = 0xFFFFFE0000000000
"""Synthetic vmem_t addresses for ::vmem's ADDR column: base + 0x1000 x vm_id."""


def format_vmem(arenas: list[tuple[int, Any]]) -> str:
    """mdb ::vmem (genunix `vmem` dcmd): ADDR, NAME indented 2 per ancestor in a 22-byte field
    (the name buffer holds 21 characters), INUSE, TOTAL, SUCCEED, FAIL."""
    out = [f"{'ADDR':<16} {'NAME':<22} {'INUSE':>10} {'TOTAL':>12} {'SUCCEED':>9} {'FAIL':>5}"]
    for depth, vmp in arenas:
        name = (" " * (2 * depth) + vmp.name)[:21]
        out.append(f"{VMEM_ADDR_BASE + 0x1000 * vmp.vm_id:016x} {name:<22} "
                   f"{vmp.vk_mem_inuse:10d} {vmp.vk_mem_total:12d} {vmp.vk_alloc:9d} "
                   f"{vmp.vk_fail:5d}")
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
