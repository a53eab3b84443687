"""Physical pages and vmalloc: per-NUMA-node page pools with watermarks, direct reclaim,
kswapd, shrinkers, modelled reclaim dependencies, PF_MEMALLOC_NOIO, lazy vmap purging and
failure injection.

Pages are counted, not placed: the allocator hands out unique addresses in a per-node
direct-map range (`alloc_pages`, `page_to_nid`) or a vmalloc range (`vmalloc`), so policies can
tell the two apart as the SPL does with `is_vmalloc_addr`. External fragmentation of physical
memory is not modelled. Each node has an equal share of the pages and of each watermark; an
allocation tries the local node, then the others in node order, first above their low
watermark (get_page_from_freelist with ALLOC_WMARK_LOW), then above the request's floor (the
slow path after waking kswapd), then reclaims (__alloc_pages_slowpath). Page cache, reserved
pages and dirty pages that are not tied to a node are spread over the nodes evenly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from simcore.cpu import Gen, Thread
from simcore.flags import KM_NOFS, KM_NOIO, KM_NOSLEEP, KM_PUSHPAGE, KM_SLEEP
from simcore.spinlock import SpinLock

DIRECT_MAP_BASE = 0xFFFF_8880_0000_0000
NODE_SPAN = 1 << 40
"""Bytes of direct-map address space per node (node n's pages start at base + n * span)."""
VMALLOC_BASE = 0xFFFF_C900_0000_0000
VMALLOC_END = 0xFFFF_E8FF_FFFF_FFFF
SWAP_CLUSTER_MAX = 32
"""Pages direct reclaim tries to free per pass (mm/vmscan.c)."""


@dataclass
class FailWindow:
    """Inject allocation failures with `probability` between `start` and `end` (ns)."""

    start: int
    end: int
    probability: float = 1.0


@dataclass
class MemoryConfig:
    """Page budget and reclaim parameters."""

    total_bytes: int = 4 << 30
    page_size: int = 4096
    watermark_min: float = 0.01
    """Fractions of all pages: below min, sleeping allocations enter direct reclaim."""
    watermark_low: float = 0.02
    """Below low, kswapd is woken."""
    watermark_high: float = 0.03
    """kswapd reclaims until free pages are above high."""
    reclaimable_bytes: int = 0
    """Clean page cache that reclaim can drop (counted as in use until reclaimed)."""
    fail_probability: float = 0.0
    """Probability that any page allocation fails (failure injection)."""
    fail_windows: list[FailWindow] = field(default_factory=list)
    lazy_max_pages: int = 0
    """Lazily freed vmalloc pages before a purge; 0 = the kernel's rule, 32 MiB of pages times
    fls(CPUs) (mm/vmalloc.c lazy_max_pages)."""


@dataclass
class Shrinker:
    """A registered shrinker: `count()` reports freeable objects, `scan(t, nr)` frees pages."""

    name: str
    count: Callable[[], int]
    scan: Callable[[Thread, int], Gen]
    calls: int = 0


@dataclass
class VmArea:
    """One vmalloc area: its address, size and the pages it took from each node."""

    addr: int
    pages: int
    nodes: list[tuple[int, int]] = field(default_factory=list)


class PageAllocator:
    """alloc_pages / free_pages / vmalloc / vfree with reclaim, over per-node page pools."""

    def __init__(self, machine: Any, cfg: MemoryConfig) -> None:
        self.machine = machine
        self.env = machine.env
        self.cfg = cfg
        self.page_size = cfg.page_size
        self.total_pages = cfg.total_bytes // cfg.page_size
        """Pages of RAM."""
        self.nodes = max(1, machine.nodes)
        base, extra = divmod(self.total_pages, self.nodes)
        self.node_pages = [base + (1 if n < extra else 0) for n in range(self.nodes)]
        """Pages of each node."""
        self.node_free = list(self.node_pages)
        """Free pages of each node."""
        self.reclaimable = cfg.reclaimable_bytes // cfg.page_size
        """Clean page-cache pages reclaim may drop."""
        self.reserved = 0
        """Pages taken by other kernel users (memory-pressure episodes)."""
        self.used = self.reclaimable
        self.min_pages = int(self.total_pages * cfg.watermark_min)
        self.low_pages = int(self.total_pages * cfg.watermark_low)
        self.high_pages = int(self.total_pages * cfg.watermark_high)
        share = [p / self.total_pages for p in self.node_pages]
        self.node_min = [int(self.min_pages * f) for f in share]
        """Each node's min watermark (its share of min_free_kbytes)."""
        self.node_low = [int(self.low_pages * f) for f in share]
        self.node_high = [int(self.high_pages * f) for f in share]
        self.vmap_lock = SpinLock(machine, "vmap_area_lock")
        """The global lock of the vmap_area trees: taken for the address-range search and
        insert (alloc_vmap_area), the area's removal on vfree and the lazy purge; the page
        mapping and unmapping happen outside it."""
        ncpus = max(1, len(machine.cpus))
        self.lazy_max_pages = cfg.lazy_max_pages or (
            (32 << 20) // cfg.page_size * ncpus.bit_length())
        """lazy_max_pages(): lazily freed pages that trigger a purge."""
        self.lazy_pages = 0
        """vmap_lazy_nr: pages of freed areas whose address range is not yet purged."""
        self.lazy_areas = 0
        self.shrinkers: list[Shrinker] = []
        self.dependencies: list[tuple[str, Callable[[Thread], Gen]]] = []
        """Modelled reclaim dependencies, run by direct reclaim (e.g. writeback)."""
        self.vm_areas: dict[int, VmArea] = {}
        self._next_page = [DIRECT_MAP_BASE + n * NODE_SPAN for n in range(self.nodes)]
        self._next_vm = VMALLOC_BASE
        self._fail = machine.rng("memory.fail")
        self.in_reclaim: set[Thread] = set()
        self.stats = {"alloc_pages": 0, "alloc_fail": 0, "injected_fail": 0, "free_pages": 0,
                      "vmalloc": 0, "vfree": 0, "direct_reclaim": 0, "reclaimed": 0,
                      "kswapd_wake": 0, "vmap_purge": 0, "alloc_remote_node": 0}
        self._kswapd_wake: Any = None
        self._kswapd = machine.spawn("kswapd0", self._kswapd_loop)
        self._vfree_deferred: list[int] = []
        self._vfree_wake: Any = None
        self._vfree_thread = machine.spawn("vfree_deferred", self._vfree_loop)

    # --- accounting -----------------------------------------------------------------------
    @property
    def free(self) -> int:
        """Free pages (all nodes)."""
        return sum(self.node_free)

    @property
    def used(self) -> int:
        """Pages in use: allocator pages, page cache, dirty and reserved pages."""
        return self.total_pages - sum(self.node_free)

    @used.setter
    def used(self, value: int) -> None:
        # pages not tied to a node (page cache, dirty pages, reservations) come from and go
        # back to the nodes evenly
        delta = value - self.used
        nf = self.node_free
        n = self.nodes
        if n == 1:
            nf[0] -= delta
            return
        while delta > 0:
            have = [i for i in range(n) if nf[i] > 0] or list(range(n))
            each = max(1, delta // len(have))
            for i in have:
                take = min(each, delta, nf[i]) if nf[i] > 0 else min(each, delta)
                nf[i] -= take
                delta -= take
                if not delta:
                    break
        while delta < 0:
            room = [i for i in range(n) if nf[i] < self.node_pages[i]] or list(range(n))
            each = max(1, -delta // len(room))
            for i in room:
                give = min(each, -delta, max(self.node_pages[i] - nf[i], 1))
                nf[i] += give
                delta += give
                if not delta:
                    break

    def reserve(self, pages: int) -> int:
        """Take up to `pages` pages for another kernel user (pressure); returns pages taken."""
        take = max(0, min(pages, self.free))
        self.reserved += take
        self.used += take
        return take

    def unreserve(self, pages: int) -> None:
        give = min(pages, self.reserved)
        self.reserved -= give
        self.used -= give

    def page_to_nid(self, addr: int) -> int:
        """The node of a page returned by `alloc_pages`."""
        return (addr - DIRECT_MAP_BASE) // NODE_SPAN

    def register_shrinker(self, name: str, count: Callable[[], int],
                          scan: Callable[[Thread, int], Gen]) -> Shrinker:
        """register_shrinker: reclaim will call `scan(t, nr_pages)` (returns pages freed)."""
        s = Shrinker(name, count, scan)
        self.shrinkers.append(s)
        return s

    def add_reclaim_dependency(self, name: str, fn: Callable[[Thread], Gen]) -> None:
        """Direct reclaim runs `fn(t)` (may block), e.g. "writeback needs objects of cache X"."""
        self.dependencies.append((name, fn))

    def is_vmalloc_addr(self, addr: int) -> bool:
        return VMALLOC_BASE <= addr <= VMALLOC_END

    def _injected_failure(self) -> bool:
        p = self.cfg.fail_probability
        now = self.env.now
        for w in self.cfg.fail_windows:
            if w.start <= now < w.end:
                p = max(p, w.probability)
        return p > 0 and self._fail.random() < p

    # --- pages ----------------------------------------------------------------------------
    def _zonelist(self, node: int) -> list[int]:
        """Nodes in fallback order: the preferred node, then the others in node order."""
        return [node] + [n for n in range(self.nodes) if n != node]

    def _pick_node(self, node: int, n: int, floor_frac: tuple[int, int]) -> int:
        """The node that can give `n` pages: the first in zonelist order above its low
        watermark, else the first above its floor (min watermark x `floor_frac`); -1 if none."""
        nf = self.node_free
        if self.nodes == 1:
            if nf[0] - n >= self.node_low[0]:
                return 0
            num, den = floor_frac
            return 0 if nf[0] - n >= self.node_min[0] * num // den else -1
        zl = self._zonelist(node)
        for i in zl:
            if nf[i] - n >= self.node_low[i]:
                return i
        num, den = floor_frac
        for i in zl:
            if nf[i] - n >= self.node_min[i] * num // den:
                return i
        return -1

    def _get_pages(self, t: Thread, n: int, flags: int, node: int | None = None) -> Gen:
        """Take `n` pages, preferring `node` (default: the thread's node) and reclaiming if
        allowed; the node they came from, or -1 on failure."""
        yield from t.sync()
        if self._injected_failure():
            self.stats["injected_fail"] += 1
            self.stats["alloc_fail"] += 1
            return -1
        sleep_ok = not flags & KM_NOSLEEP
        # GFP_ATOMIC may dip below the min watermark (ALLOC_HARDER) to a quarter of it,
        # __GFP_HIGH (KM_PUSHPAGE) to half of it; a thread already in reclaim has PF_MEMALLOC
        # (ALLOC_NO_WATERMARKS) and never recurses into reclaim; other sleeping requests reclaim
        if t in self.in_reclaim:
            frac, sleep_ok = (0, 1), False
        elif not sleep_ok:
            frac = (1, 4)
        elif flags & KM_PUSHPAGE:
            frac = (1, 2)
        else:
            frac = (1, 1)
        pref = t.cpu.node if node is None else node
        tries = 0
        while True:
            got = self._pick_node(pref, n, frac)
            if got >= 0:
                break
            if not sleep_ok or tries >= 16:
                self.stats["alloc_fail"] += 1
                self.machine.metrics.event("page_alloc_fail", pages=n, free=self.free,
                                           thread=t.name)
                return -1
            tries += 1
            self.wake_kswapd()
            yield from self.direct_reclaim(t, n, flags)
        nf = self.node_free
        if nf[got] - n < self.node_low[got]:
            self.wake_kswapd()
        nf[got] -= n
        if got != pref:
            self.stats["alloc_remote_node"] += 1
        self.stats["alloc_pages"] += n
        return got

    def alloc_pages(self, t: Thread, order: int, flags: int, node: int | None = None) -> Gen:
        """alloc_pages_node: 2^order contiguous pages from `node` (default: the thread's node,
        falling back to the others); their address, or None on failure."""
        n = 1 << order
        got = yield from self._get_pages(t, n, flags, node)
        if got < 0:
            return None
        t.charge("page_alloc", n)
        addr = self._next_page[got]
        self._next_page[got] += n * self.page_size
        return addr

    def free_pages(self, t: Thread, addr: int, order: int) -> Gen:
        """free_pages: return 2^order pages."""
        yield from t.sync()
        self.release_pages(t, addr, order)

    def release_pages(self, t: Thread, addr: int, order: int) -> None:
        """free_pages as a plain call, for callers that free pages inside a section they do
        not leave (Linux 2.6.17 free_block destroys slabs under list_lock with IRQs off)."""
        n = 1 << order
        t.charge("page_free", n)
        self.node_free[self.page_to_nid(addr)] += n
        self.stats["free_pages"] += n

    def vmalloc(self, t: Thread, nbytes: int, flags: int) -> Gen:
        """__vmalloc_node_range: reserve the address range under vmap_area_lock
        (alloc_vmap_area), then allocate the pages one by one from the local node (falling
        back) and map them outside the lock; the address, or None.
        Like spl_vmalloc on the kernels of the SPL's reclaim deadlocks, the page-table
        allocation inside does not honour the caller's flags, so the request is made with
        KM_SLEEP (GFP_KERNEL) semantics: it may reclaim, do I/O and enter the file system,
        unless the thread runs with PF_MEMALLOC_NOIO (fstrans), which applies to every
        allocation the thread makes, page tables included."""
        pages = -(-nbytes // self.page_size)
        yield from t.might_resched()  # alloc_vmap_area's might_sleep
        yield from self.vmap_lock.lock(t)
        t.charge("vmap_area_search")
        addr = self._next_vm
        self._next_vm += (pages + 1) * self.page_size
        yield from self.vmap_lock.unlock(t)
        got = yield from self._get_pages(t, pages, KM_SLEEP)
        if got < 0:
            yield from self.vmap_lock.lock(t)
            t.charge("vmap_area_search")
            yield from self.vmap_lock.unlock(t)
            return None
        t.charge("page_alloc", pages)
        t.charge("vmalloc_per_page", pages)
        self.vm_areas[addr] = VmArea(addr, pages, [(got, pages)])
        self.stats["vmalloc"] += 1
        return addr

    def vfree(self, t: Thread, addr: int) -> Gen:
        """vfree: find and unlink the area under vmap_area_lock, unmap its pages and free them
        outside the lock, and put the address range on the lazy-purge list; once more than
        lazy_max_pages are pending, purge them (flush the kernel TLB range on every CPU, then
        return the areas to the free tree under the lock: __purge_vmap_area_lazy, run by the
        freeing thread as try_purge_vmap_area_lazy did before 5.9). In interrupt context the
        kernel never takes the lock: the area goes on a list that a kernel thread frees later
        (vfree_deferred)."""
        if t.in_irq:
            self._vfree_deferred.append(addr)
            t.charge("atomic_op")
            if self._vfree_wake is not None and not self._vfree_wake.triggered:
                self._vfree_wake.succeed()
            return
        area = self.vm_areas.pop(addr)
        yield from t.might_resched()  # vfree's might_sleep
        yield from self.vmap_lock.lock(t)
        t.charge("vmap_area_search")
        yield from self.vmap_lock.unlock(t)
        t.charge("vfree_per_page", area.pages)
        t.charge("page_free", area.pages)
        for node, n in area.nodes:
            self.node_free[node] += n
        self.stats["vfree"] += 1
        t.charge("atomic_op")
        self.lazy_pages += area.pages
        self.lazy_areas += 1
        if self.lazy_pages > self.lazy_max_pages:
            yield from self._purge_vmap_area_lazy(t)

    def _purge_vmap_area_lazy(self, t: Thread) -> Gen:
        """__purge_vmap_area_lazy: flush the TLB for the lazily freed ranges, then give every
        pending area back to the free tree under vmap_area_lock."""
        areas = self.lazy_areas
        self.lazy_pages = 0
        self.lazy_areas = 0
        t.charge("tlb_flush_kernel_range")
        yield from self.vmap_lock.lock(t)
        t.charge("vmap_purge_per_area", areas)
        yield from self.vmap_lock.unlock(t)
        self.stats["vmap_purge"] += 1
        self.machine.metrics.event("vmap_purge", thread=t.name, areas=areas)

    # --- reclaim --------------------------------------------------------------------------
    def direct_reclaim(self, t: Thread, nr_pages: int, flags: int = 0) -> Gen:
        """try_to_free_pages: drop clean page cache, call the shrinkers, then, when that was
        not enough and the request may do I/O and enter the file system (not KM_NOIO or
        KM_NOFS, and not from a thread with PF_MEMALLOC_NOIO), run the modelled dependencies
        (which may block: that is how reclaim deadlocks arise)."""
        self.stats["direct_reclaim"] += 1
        m = self.machine.metrics
        m.event("direct_reclaim", thread=t.name, cpu=t.cpu.id, free=self.free, want=nr_pages)
        self.in_reclaim.add(t)
        want = max(nr_pages, SWAP_CLUSTER_MAX)
        got = yield from self._reclaim(t, want)
        if got < nr_pages and not flags & (KM_NOIO | KM_NOFS) and not t.memalloc_noio:
            for _name, fn in self.dependencies:
                yield from fn(t)
        self.in_reclaim.discard(t)

    def _reclaim(self, t: Thread, want: int) -> Gen:
        take = min(self.reclaimable, want)
        if take:
            t.charge("reclaim_per_page", take)
            yield from t.sync()
            self.reclaimable -= take
            self.used -= take
            self.stats["reclaimed"] += take
        for s in self.shrinkers:
            if take >= want:
                break
            s.calls += 1
            freed = yield from s.scan(t, want - take)
            take += freed or 0
        return take

    def wake_kswapd(self) -> None:
        if self._kswapd_wake is not None and not self._kswapd_wake.triggered:
            self.stats["kswapd_wake"] += 1
            self._kswapd_wake.succeed()

    def _vfree_loop(self, t: Thread) -> Gen:
        """Free the vmalloc areas released from interrupt context (free_work)."""
        while True:
            if not self._vfree_deferred:
                self._vfree_wake = self.env.event()
                yield from t.block(self._vfree_wake, ("kswapd_idle",))
                continue
            addr = self._vfree_deferred.pop(0)
            yield from self.vfree(t, addr)

    def _kswapd_loop(self, t: Thread) -> Gen:
        while True:
            self._kswapd_wake = self.env.event()
            yield from t.block(self._kswapd_wake, ("kswapd_idle",))
            while any(f < h for f, h in zip(self.node_free, self.node_high, strict=True)):
                got = yield from self._reclaim(t, max(SWAP_CLUSTER_MAX, self.high_pages - self.free))
                if not got:
                    break
