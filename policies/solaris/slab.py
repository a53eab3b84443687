"""illumos kmem slab-layer data: slab geometry, slabs, the ordered set of partial slabs and the
allocated-buffer hash of large-object caches.

Models the geometry code of `kmem_cache_create` (seeds/002, L3356-3437), `kmem_slab_t`, the
partial-slab AVL tree with `kmem_partial_slab_cmp` / KMEM_PARTIAL_SLAB_WEIGHT (L3143-3209) and
the KMF_HASH bufctl hash (L1689-1696, L1782-1795, L2851-2895). Plain data and plain functions;
the locked paths live in `policies.solaris.slab_layer`.

Deviations (also noted at the code):
- The partial-slab AVL tree is a sorted Python list searched with `bisect`, keyed by
  (weight, slab address); it gives the same order as the AVL tree and the same first/last/prev.
- The tie-breaking "slab address" is the address of the slab's memory, for embedded and hashed
  slabs alike (a hashed slab's kmem_slab_t lives in kmem_slab_cache at an unrelated address).
- KMC_QCACHE's slab size is VMEM_QCACHE_SLABSIZE of the arena's qcache_max (L3417), which the
  caller passes in.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

KMEM_ALIGN = 8
"""Minimum alignment, and the size granularity chunks are rounded to."""
KMEM_VOID_FRACTION = 8
"""Slab waste bound 1/8: embedded-slab cut-off, frag denominator, reclaim threshold base."""
KMEM_SLAB_SIZE = 72
"""sizeof (kmem_slab_t) on LP64 (embedded at the end of a small slab)."""
KMEM_ALLOC_SIZES = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
                    384, 448, 512, 640, 768, 896, 1152, 1344, 1600, 2048, 2688, 4096)
"""kmem_alloc_sizes[] (L922-936): the kmem_alloc_<N> classes up to KMEM_MAXBUF; the last six
are P2ALIGN(8192 / k, 64) for k = 7 .. 2."""
KMEM_BIG_ALLOC_SIZES = (8192, 12288, 16384, 24576, 32768, 40960, 49152, 57344, 65536, 73728,
                        81920, 90112, 98304, 106496, 114688, 122880, 131072)
"""kmem_big_alloc_sizes[] (L939-945), all present with kmem_max_cached = KMEM_BIG_MAXBUF
(LP64, L997)."""
KMEM_BUFCTL_SIZE = 24
"""sizeof (kmem_bufctl_t) {bc_next, bc_addr, bc_slab} of hashed caches."""
KMEM_HASH_INITIAL = 64
"""Initial and minimum hash-table buckets."""
KMEM_SLAB_NOMOVE = 0x1
KMEM_SLAB_MOVE_PENDING = 0x2


def highbit(x: int) -> int:
    """1-based index of the highest set bit; highbit(0) == 0."""
    return x.bit_length()


@dataclass(frozen=True)
class SlabGeometry:
    """What kmem_cache_create computes for the slab layer."""

    chunksize: int
    slabsize: int
    hashed: bool
    """KMF_HASH: off-slab kmem_slab_t and bufctls, allocated-buffer hash."""
    notouch: bool
    """KMC_NOTOUCH (asked for, or forced by align < KMEM_ALIGN)."""
    mincolor: int
    maxcolor: int
    maxchunks: int
    """slabsize / chunksize (ignores the embedded header: feeds binshift and NOMOVE)."""
    binshift: int
    """cache_partial_binshift = highbit(maxchunks / 16) + 1."""

    def chunks(self, color: int) -> int:
        """Buffers in a slab created with `color` (L1548, L1551)."""
        if self.hashed:
            return (self.slabsize - color) // self.chunksize
        return (self.slabsize - KMEM_SLAB_SIZE - color) // self.chunksize


def kmem_slab_geometry(bufsize: int, align: int, quantum: int,
                       cflags: frozenset[str] = frozenset(),
                       qcache_slabsize: int = 0) -> SlabGeometry:
    """Chunk size, slab size, embedded or hashed layout and colour range of a cache, as
    kmem_cache_create decides them for a non-debug kernel (kmem_flags 0; L3267-3437)."""
    if align == 0:
        align = KMEM_ALIGN
    notouch = "KMC_NOTOUCH" in cflags or align < KMEM_ALIGN
    if align & (align - 1) or align > quantum:
        raise ValueError(f"kmem_cache_create: bad alignment {align}")
    chunksize = bufsize
    if align >= KMEM_ALIGN:
        chunksize = -(-chunksize // KMEM_ALIGN) * KMEM_ALIGN
    chunksize = -(-chunksize // align) * align
    if "KMC_NOHASH" in cflags or (not notouch and chunksize < quantum // KMEM_VOID_FRACTION):
        slabsize = quantum
        mincolor = 0
        maxcolor = (slabsize - KMEM_SLAB_SIZE) % chunksize
        hashed = False
    else:
        minwaste = 1 << 63
        bestfit = 0
        chunks = 1
        while chunks <= KMEM_VOID_FRACTION:
            slabsize = -(-(chunksize * chunks) // quantum) * quantum
            # the seed resets its loop variable to the chunks that fit (L3410), so the
            # search skips ahead: reproduced on purpose
            chunks = slabsize // chunksize
            waste = (slabsize % chunksize) // chunks
            if waste < minwaste:
                minwaste = waste
                bestfit = slabsize
            chunks += 1
        if "KMC_QCACHE" in cflags:
            bestfit = qcache_slabsize
        slabsize = bestfit
        mincolor = 0
        maxcolor = bestfit % chunksize
        hashed = True
    maxchunks = slabsize // chunksize
    binshift = highbit(maxchunks // 16) + 1
    if maxcolor >= quantum:
        maxcolor = quantum - 1
    return SlabGeometry(chunksize, slabsize, hashed, notouch, mincolor, maxcolor, maxchunks,
                        binshift)


@dataclass(eq=False)
class KmemSlab:
    """kmem_slab_t: one slab, its free-buffer stack and its consolidator state."""

    cache: Any
    mem: int
    """Address of the slab's memory (page-aligned); also the AVL tie-break key."""
    base: int
    """slab_base: first buffer (mem + colour)."""
    chunks: int
    """slab_chunks: buffers in this slab."""
    head: list[int] = field(default_factory=list)
    """slab_head: free buffers, LIFO; the head is the end of the list."""
    free_set: set[int] = field(default_factory=set)
    """The same free buffers, for kmem_slab_allocated."""
    refcnt: int = 0
    """slab_refcnt: allocated buffers."""
    flags: int = 0
    """KMEM_SLAB_NOMOVE | KMEM_SLAB_MOVE_PENDING."""
    stuck_offset: int = -1
    """slab_stuck_offset: offset of the buffer the client would not move; -1 for none."""
    later_count: int = 0
    """slab_later_count: LATER answers since the last YES."""
    key: tuple[int, int] = (0, 0)
    """Position in the partial-slab tree while the slab is in it."""
    where: str = ""
    """Which slab list holds the slab: partial, complete, dead or '' (none)."""
    header: int | None = None
    """A hashed slab's kmem_slab_t, a buffer of kmem_slab_cache."""
    bufctls: list[int] = field(default_factory=list)
    """A hashed slab's kmem_bufctl_t buffers (kmem_bufctl_cache), one per chunk."""

    def is_partial(self) -> bool:
        """KMEM_SLAB_IS_PARTIAL."""
        return 0 < self.refcnt < self.chunks

    def is_all_used(self) -> bool:
        """KMEM_SLAB_IS_ALL_USED."""
        return self.refcnt == self.chunks

    def offset(self, buf: int) -> int:
        """KMEM_SLAB_OFFSET."""
        return buf - self.base


class PartialSlabTree:
    """cache_partial_slabs: partial slabs ascending by binned weight, NOMOVE slabs first, ties
    by slab address. `first()` supplies allocations; the consolidator walks back from
    `last()`. A sorted list with bisect stands in for the AVL tree (same order)."""

    def __init__(self, binshift: int, maxchunks: int) -> None:
        self.binshift = binshift
        self.maxchunks = maxchunks
        self.keys: list[tuple[int, int]] = []
        self.slabs: list[KmemSlab] = []

    def __len__(self) -> int:
        return len(self.slabs)

    def weight(self, sp: KmemSlab) -> int:
        """KMEM_PARTIAL_SLAB_WEIGHT, less cache_maxchunks for a NOMOVE slab."""
        b = self.binshift
        if sp.refcnt <= b or sp.chunks - sp.refcnt <= b:
            w = -sp.refcnt
        else:
            w = -(b + (sp.refcnt >> b))
        if sp.flags & KMEM_SLAB_NOMOVE:
            w -= self.maxchunks
        return w

    def add(self, sp: KmemSlab) -> None:
        """avl_add."""
        k = (self.weight(sp), sp.mem)
        i = bisect_left(self.keys, k)
        self.keys.insert(i, k)
        self.slabs.insert(i, sp)
        sp.key = k
        sp.where = "partial"

    def index(self, sp: KmemSlab) -> int:
        return bisect_left(self.keys, sp.key)

    def remove(self, sp: KmemSlab) -> None:
        """avl_remove."""
        i = bisect_left(self.keys, sp.key)
        del self.keys[i]
        del self.slabs[i]
        sp.where = ""

    def update(self, sp: KmemSlab) -> bool:
        """avl_update: re-sort `sp` if its key changed; True if it moved."""
        k = (self.weight(sp), sp.mem)
        if k == sp.key:
            return False
        self.remove(sp)
        self.add(sp)
        return True

    def first(self) -> KmemSlab | None:
        """avl_first."""
        return self.slabs[0] if self.slabs else None

    def last(self) -> KmemSlab | None:
        """avl_last."""
        return self.slabs[-1] if self.slabs else None

    def prev(self, sp: KmemSlab) -> KmemSlab | None:
        """AVL_PREV."""
        i = self.index(sp)
        return self.slabs[i - 1] if i > 0 else None


class KmemHash:
    """The allocated-buffer hash of a KMF_HASH cache: buckets of bufctls, new entries at the
    chain head; `cache_lookup_depth` counts chain steps past non-matching entries on free."""

    def __init__(self, chunksize: int) -> None:
        self.shift = highbit(chunksize) - 1
        """cache_hash_shift."""
        self.mask = KMEM_HASH_INITIAL - 1
        """cache_hash_mask."""
        self.table: list[list[int]] = [[] for _ in range(KMEM_HASH_INITIAL)]
        """Chains of buffer addresses; a chain's head is the end of its list."""
        self.slab_of: dict[int, KmemSlab] = {}
        """bc_slab of each allocated buffer's bufctl."""

    def bucket(self, buf: int) -> list[int]:
        """KMEM_HASH(cp, buf)."""
        return self.table[(buf >> self.shift) & self.mask]

    def insert(self, buf: int, sp: KmemSlab) -> None:
        """Push the bufctl at the head of its chain (kmem_slab_alloc_impl)."""
        self.bucket(buf).append(buf)
        self.slab_of[buf] = sp

    def remove(self, buf: int) -> tuple[KmemSlab | None, int]:
        """Walk the chain from its head; return the buffer's slab (None if it is not
        allocated) and the number of non-matching entries passed."""
        chain = self.bucket(buf)
        for depth, i in enumerate(range(len(chain) - 1, -1, -1)):
            if chain[i] == buf:
                del chain[i]
                return self.slab_of.pop(buf), depth
        return None, len(chain)

    def lookup(self, buf: int) -> KmemSlab | None:
        """kmem_slab_allocated for hashed caches: the slab if `buf` is allocated."""
        return self.slab_of.get(buf)

    def rescale(self, new_size: int) -> int:
        """Rehash every chain into `new_size` buckets in the seed's order (bucket 0 up, each
        chain from its head, pushing at the new heads); returns bufctls moved."""
        old = self.table
        self.table = [[] for _ in range(new_size)]
        self.mask = new_size - 1
        moved = 0
        for chain in old:
            for buf in reversed(chain):
                self.bucket(buf).append(buf)
                moved += 1
        return moved
