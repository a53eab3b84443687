"""illumos kmem magazine layer data: the magazine-type table, magazines, the depot's two
magazine lists and the per-CPU cache with its loaded and previous magazines.

Models `kmem_magtype[]`, `kmem_magazine_t`, `kmem_maglist_t`, `kmem_cpu_cache_t` and
`kmem_cpu_reload` (seeds/002, L961-971, L2161-2172). Plain data and plain functions only: the
paths that take locks live in `policies.solaris`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simcore.mutex import AdaptiveMutex

POINTER_BYTES = 8
"""sizeof (void *) on LP64: a magazine is (magsize + 1) pointer words."""


@dataclass
class KmemMagtype:
    """One row of `kmem_magtype[]`: rounds per magazine and the chunk-size window it serves."""

    mt_magsize: int
    """Rounds (object pointers) a magazine of this type holds."""
    mt_align: int
    """Alignment of the kmem_magazine_<N> cache."""
    mt_minbuf: int
    """A cache starts at the first row whose mt_minbuf is below its chunk size."""
    mt_maxbuf: int
    """A cache may grow past this row only while its chunk size is below mt_maxbuf."""
    mt_cache: Any = None
    """The kmem_magazine_<N> cache magazines of this type come from."""

    @property
    def bufsize(self) -> int:
        """Size of one magazine: the link word plus the rounds."""
        return (self.mt_magsize + 1) * POINTER_BYTES


KMEM_MAGTYPE_TABLE: tuple[tuple[int, int, int, int], ...] = (
    (1, 8, 3200, 65536),
    (3, 16, 256, 32768),
    (7, 32, 64, 16384),
    (15, 64, 0, 8192),
    (31, 64, 0, 4096),
    (47, 64, 0, 2048),
    (63, 64, 0, 1024),
    (95, 64, 0, 512),
    (143, 64, 0, 0),
)
"""(mt_magsize, mt_align, mt_minbuf, mt_maxbuf), in the seed's order (L961-971)."""


def initial_magtype_index(chunksize: int) -> int:
    """Row a new cache starts at: skip rows while chunksize <= mt_minbuf (kmem_cache_create,
    L3466-3467)."""
    i = 0
    while chunksize <= KMEM_MAGTYPE_TABLE[i][2]:
        i += 1
    return i


def max_magtype_index(chunksize: int) -> int:
    """Highest row resizing can reach: row i+1 is allowed while chunksize < mt_maxbuf[i]
    (kmem_cache_magazine_resize, L2835)."""
    i = initial_magtype_index(chunksize)
    while chunksize < KMEM_MAGTYPE_TABLE[i][3]:
        i += 1
    return i


@dataclass(eq=False)
class Magazine:
    """kmem_magazine_t: a buffer of the kmem_magazine_<N> cache holding `mag_round[]`.
    Which slots are valid is recorded outside (cc_rounds, or full/empty depot list)."""

    addr: int
    """Address of the magazine itself (an object of its kmem_magazine_<N> cache)."""
    mag_round: list[int]
    """The rounds array, length mt_magsize."""

    @property
    def magsize(self) -> int:
        return len(self.mag_round)


@dataclass
class KmemMaglist:
    """kmem_maglist_t: one depot list (full or empty) with its working-set statistics."""

    ml_list: list[Magazine] = field(default_factory=list)
    """LIFO stack of magazines; the head is the end of the Python list."""
    ml_total: int = 0
    """Magazines on the list."""
    ml_min: int = 0
    """Lowest ml_total since the last kmem_depot_ws_update."""
    ml_reaplimit: int = 0
    """ml_min of the previous interval."""
    ml_alloc: int = 0
    """Magazines ever taken off this list (kmem_depot_alloc successes)."""


@dataclass(eq=False)
class KmemCpuCache:
    """kmem_cpu_cache_t: one CPU's magazines for one cache, protected by its own cc_lock."""

    cc_lock: AdaptiveMutex
    cc_alloc: int = 0
    """Allocations served from the loaded magazine."""
    cc_free: int = 0
    """Frees served into the loaded magazine."""
    cc_loaded: Magazine | None = None
    cc_rounds: int = -1
    """Valid rounds in the loaded magazine; -1 when there is none."""
    cc_ploaded: Magazine | None = None
    cc_prounds: int = -1
    """Valid rounds in the previous magazine (full, empty or -1 for none)."""
    cc_magsize: int = 0
    """Capacity of this CPU's magazines; 0 while the magazine layer is disabled."""
    hit_alloc: int = 0
    """Counted local hits not yet folded into the statistics (not kernel state; see
    KmemCpuLayer.fold_hits): allocations from the loaded magazine,"""
    hit_alloc_reload: int = 0
    """allocations after kmem_cpu_reload swapped in a full previous magazine,"""
    hit_free: int = 0
    """frees into the loaded magazine,"""
    hit_free_reload: int = 0
    """and frees after kmem_cpu_reload swapped in an empty previous magazine."""

    def constructed(self) -> int:
        """Rounds this CPU holds (the kstat's per-CPU buf_avail share)."""
        return max(self.cc_rounds, 0) + max(self.cc_prounds, 0)


def kmem_cpu_reload(ccp: KmemCpuCache, mp: Magazine | None, rounds: int) -> None:
    """kmem_cpu_reload (L2161): loaded becomes previous, `mp` becomes loaded. The old loaded
    count plus the new one equals the magazine size, which keeps the previous magazine either
    full or empty (asserted at L2164). Caller holds cc_lock."""
    ccp.cc_ploaded = ccp.cc_loaded
    ccp.cc_prounds = ccp.cc_rounds
    ccp.cc_loaded = mp
    ccp.cc_rounds = rounds
