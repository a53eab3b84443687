"""The vmem arenas illumos kmem's slabs come from (Bonwick & Adams 2001; usr/src/uts/common/os/
vmem.c and seg_kmem.c; the arena set of kmem_init / kmem_cache_init, seeds/002 L3748-3858):

    heap                      kernel virtual address space (no source)
        kmem_metadata         VMC_NO_QCACHE; the source of kmem's own metadata
            kmem_msb          segkmem: magazines, kmem_slab_cache, kmem_bufctl_cache
        kmem_va               quantum caches kmem_va_4096 .. kmem_va_32768 (qcache_max 8 pages)
            kmem_default      segkmem: every other cache (kmem_alloc_N, the experiment's)

Each arena has its vm_lock and the vmem kstats ::kmastat prints (vk_mem_inuse, vk_mem_total,
vk_mem_import, vk_alloc, vk_free, vk_fail). vmem_alloc of at most qcache_max bytes is a
kmem_cache_alloc from the arena's quantum cache (a real cache of the policy, KMC_QCACHE |
KMC_NOTOUCH, slabs of VMEM_QCACHE_SLABSIZE(qcache_max) = 128 KiB taken with vmem_xalloc);
anything else is vmem_xalloc: under vm_lock a segment from the arena's spans, or, when none
fits, vm_lock dropped around an import from the source (vmem_import), the imported span added
and the segment taken. A segkmem arena's import is segkmem_alloc: virtual space from the
source, then physical pages (page_create_va) mapped into it; a freed segment whose imported
span is entirely free goes back to the source (vmem_span_destroy), with segkmem_free unmapping
and freeing the pages.

Deviations (also in docs/policies/solaris.md):
- A span is imported at exactly the requested size, so an imported span always holds exactly
  one segment: vmem_xalloc of a segkmem arena always imports, and every free returns the span.
  (vmem imports at least the request rounded to the source's quantum and keeps spans it can
  reuse; with one segment per span the free-list search and coalescing never matter.)
- heap is one span of `kmem_heap_size` bytes (the kernel VA range; default twice the RAM),
  handed out from its low end and never reused; only its accounting is modelled.
- Addresses: a segkmem arena returns the page allocator's address of the slab's pages (the
  rest of the policy keys slabs by it); the virtual address taken from the source is kept
  beside it for the free.
- kmem_cache, kmem_hash, kmem_log, kmem_oversize, kmem_firewall and segkp are not modelled
  (hash tables cost one "kmalloc"; kmem_alloc above kmem_max_cached is not offered).
- vm_lock is the policy's adaptive mutex model (simcore.mutex.AdaptiveMutex).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from policies.base import Gen
from simcore.cpu import Thread
from simcore.flags import KM_NOSLEEP
from simcore.mutex import AdaptiveMutex


def highbit(x: int) -> int:
    """highbit: 1-based index of the highest set bit (0 for 0)."""
    return x.bit_length()


def vmem_qcache_slabsize(qcache_max: int) -> int:
    """VMEM_QCACHE_SLABSIZE: slab size of a quantum cache, MAX(1 << highbit(3 x max), 64K)."""
    return max(1 << highbit(3 * qcache_max), 64 << 10)


@dataclass(eq=False)
class VmemArena:
    """vmem_t: one arena with its lock and kstats."""

    name: str
    vm_id: int
    quantum: int
    source: VmemArena | None
    lock: AdaptiveMutex
    """vm_lock (MUTEX_DEFAULT)."""
    segkmem: bool = False
    """The import function is segkmem_alloc (spans are backed by physical pages)."""
    qcache_max: int = 0
    identifier: bool = False
    """VMC_IDENTIFIER: an arena of identifiers, not memory (kmem_reap_idspace)."""
    qcache: list[Any] = field(default_factory=list)
    """vm_qcache[]: the quantum caches, smallest first."""
    children: list[VmemArena] = field(default_factory=list)
    vk_mem_inuse: int = 0
    vk_mem_total: int = 0
    vk_mem_import: int = 0
    vk_alloc: int = 0
    vk_free: int = 0
    vk_fail: int = 0
    vk_wait: int = 0
    """VM_SLEEP requests that found no memory (the kmem layer waits and retries)."""
    next_addr: int = 0
    """Low end of heap's unused range."""
    span_of: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Segment address -> (address in the source, size) of the span imported for it."""


class VmemLayer:
    """vmem_create / vmem_alloc / vmem_xalloc / vmem_free and segkmem of the illumos kmem
    policy (mixed into SolarisPolicy)."""

    def vmem_create(self, name: str, quantum: int, source: VmemArena | None,
                    segkmem: bool = False, qcache_max: int = 0) -> VmemArena:
        """vmem_create: a new arena; with qcache_max, its quantum caches `<name>_<size>` for
        every multiple of the quantum up to qcache_max."""
        vmp = VmemArena(name, len(self.vmem_list), quantum, source,
                        AdaptiveMutex(self.machine, "vmem_lock"), segkmem, qcache_max)
        self.vmem_list.append(vmp)
        self.vmem[name] = vmp
        if source is not None:
            source.children.append(vmp)
        for i in range(qcache_max // quantum):
            size = (i + 1) * quantum
            cp = self.kmem_cache_create_internal(
                f"{name}_{size}", size, quantum, name,
                frozenset({"KMC_QCACHE", "KMC_NOTOUCH"}), vmem_qcache_slabsize(qcache_max))
            vmp.qcache.append(cp)
        return vmp

    def vmem_tree(self) -> list[tuple[int, VmemArena]]:
        """Arenas parents first (mdb's vmem walk), with their depth below a root."""
        out: list[tuple[int, VmemArena]] = []

        def walk(vmp: VmemArena, depth: int) -> None:
            out.append((depth, vmp))
            for child in vmp.children:
                walk(child, depth + 1)

        for vmp in self.vmem_list:
            if vmp.source is None:
                walk(vmp, 0)
        return out

    def vmem_alloc(self, t: Thread, vmp: VmemArena, size: int, vmflag: int) -> Gen:
        """vmem_alloc: a quantum cache for small sizes, else vmem_xalloc. Address or None."""
        if size <= vmp.qcache_max:
            cp = vmp.qcache[(size - 1) // vmp.quantum]
            return (yield from self.kmem_cache_alloc(t, cp, vmflag))
        return (yield from self.vmem_xalloc(t, vmp, size, vmflag))

    def vmem_xalloc(self, t: Thread, vmp: VmemArena, size: int, vmflag: int) -> Gen:
        """vmem_xalloc: a segment under vm_lock; an arena with a source drops the lock
        around vmem_import. Failure counts vk_fail and returns None."""
        size = -(-size // vmp.quantum) * vmp.quantum
        yield from vmp.lock.lock(t)
        t.charge("list_op")
        if vmp.source is None:
            if vmp.vk_mem_inuse + size > vmp.vk_mem_total:
                vmp.vk_fail += 1
                yield from vmp.lock.unlock(t)
                return None
            addr = vmp.next_addr
            vmp.next_addr += size
            vmp.vk_mem_inuse += size
            vmp.vk_alloc += 1
            yield from vmp.lock.unlock(t)
            return addr
        yield from vmp.lock.unlock(t)
        got = yield from self.vmem_import(t, vmp, size, vmflag)
        yield from vmp.lock.lock(t)
        if got is None:
            if vmflag & KM_NOSLEEP:
                vmp.vk_fail += 1
            else:
                vmp.vk_wait += 1
            yield from vmp.lock.unlock(t)
            return None
        addr, src_addr = got
        vmp.span_of[addr] = (src_addr, size)
        vmp.vk_mem_total += size
        vmp.vk_mem_import += size
        vmp.vk_mem_inuse += size
        vmp.vk_alloc += 1
        t.charge("list_op", 2)
        yield from vmp.lock.unlock(t)
        return addr

    def vmem_import(self, t: Thread, vmp: VmemArena, size: int, vmflag: int) -> Gen:
        """vmem_import through the arena's import function: vmem_alloc from the source, and
        for a segkmem arena segkmem_alloc's pages mapped into it. (address, source address)
        or None."""
        src = yield from self.vmem_alloc(t, vmp.source, size, vmflag)
        if src is None:
            return None
        if not vmp.segkmem:
            return src, src
        pages = yield from self.segkmem_page_create(t, size, vmflag)
        if pages is None:
            yield from self.vmem_free(t, vmp.source, src, size)
            return None
        t.charge("vmalloc_per_page", size // self.machine.memory.page_size)
        return pages, src

    def vmem_free(self, t: Thread, vmp: VmemArena, addr: int, size: int) -> Gen:
        """vmem_free: a quantum cache's buffer back to it, else vmem_xfree."""
        if size <= vmp.qcache_max:
            cp = vmp.qcache[(size - 1) // vmp.quantum]
            yield from self.kmem_cache_free(t, cp, addr)
            return
        yield from self.vmem_xfree(t, vmp, addr, size)

    def vmem_xfree(self, t: Thread, vmp: VmemArena, addr: int, size: int) -> Gen:
        """vmem_xfree: the segment freed under vm_lock; its now empty imported span is
        destroyed and given back to the source (segkmem_free for a segkmem arena)."""
        size = -(-size // vmp.quantum) * vmp.quantum
        yield from vmp.lock.lock(t)
        t.charge("list_op")
        vmp.vk_mem_inuse -= size
        vmp.vk_free += 1
        span = vmp.span_of.pop(addr, None)
        if span is not None:
            vmp.vk_mem_total -= size
            vmp.vk_mem_import -= size
            t.charge("list_op")
        yield from vmp.lock.unlock(t)
        if span is None:
            return
        src_addr, _ = span
        if vmp.segkmem:
            t.charge("vfree_per_page", size // self.machine.memory.page_size)
            yield from self.segkmem_page_free(t, addr, size)
        yield from self.vmem_free(t, vmp.source, src_addr, size)

    def segkmem_page_create(self, t: Thread, size: int, vmflag: int) -> Gen:
        """page_create_va for `size` bytes: the covering power-of-two run from the page
        allocator with the tail given back at once (alloc_pages_exact). Address or None."""
        mem = self.machine.memory
        pages = size // mem.page_size
        order = (pages - 1).bit_length()
        addr = yield from mem.alloc_pages(t, order, vmflag)
        if addr is None:
            return None
        tail = (1 << order) - pages
        if tail:
            yield from self.segkmem_page_free(t, addr + pages * mem.page_size,
                                              tail * mem.page_size)
        return addr

    def segkmem_page_free(self, t: Thread, addr: int, size: int) -> Gen:
        """page_destroy of `size` bytes of pages, as power-of-two runs."""
        mem = self.machine.memory
        pages = size // mem.page_size
        while pages:
            order = pages.bit_length() - 1
            yield from mem.free_pages(t, addr, order)
            addr += (1 << order) * mem.page_size
            pages -= 1 << order

    def kmem_vmem_init(self) -> None:
        """The arenas of kmem_init and kmem_cache_init pass 2, in their creation order."""
        page = self.machine.memory.page_size
        heap = self.vmem_create("heap", page, None)
        mem = self.machine.memory
        heap.vk_mem_total = self.tun["kmem_heap_size"] or 2 * mem.total_pages * mem.page_size
        heap.next_addr = 1 << 44
        meta = self.vmem_create("kmem_metadata", page, heap)
        self.vmem_create("kmem_msb", page, meta, segkmem=True)
        self._kmem_va_pending = heap

    def kmem_va_init(self) -> None:
        """kmem_cache_init pass 2: kmem_va with its quantum caches, then kmem_default."""
        page = self.machine.memory.page_size
        va = self.vmem_create("kmem_va", page, self._kmem_va_pending, qcache_max=8 * page)
        self.vmem_create("kmem_default", page, va, segkmem=True)

