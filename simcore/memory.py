"""Physical pages and vmalloc: a page budget with watermarks, direct reclaim, kswapd, shrinkers,
modelled reclaim dependencies and failure injection.

Pages are counted, not placed: the allocator hands out unique addresses in a direct-map range
(`alloc_pages`) or a vmalloc range (`vmalloc`), so policies can tell the two apart as the SPL
does with `is_vmalloc_addr`. External fragmentation of physical memory is not modelled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from simcore.cpu import Gen, Thread
from simcore.flags import KM_NOFS, KM_NOSLEEP, KM_PUSHPAGE, KM_SLEEP
from simcore.spinlock import SpinLock

if TYPE_CHECKING:
    from simcore.machine import Machine

DIRECT_MAP_BASE = 0xFFFF_8880_0000_0000
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


@dataclass
class Shrinker:
    """A registered shrinker: `count()` reports freeable objects, `scan(t, nr)` frees pages."""

    name: str
    count: Callable[[], int]
    scan: Callable[[Thread, int], Gen]
    calls: int = 0


@dataclass
class VmArea:
    addr: int
    pages: int


class PageAllocator:
    """alloc_pages / free_pages / vmalloc / vfree with reclaim."""

    def __init__(self, machine: Machine, cfg: MemoryConfig) -> None:
        self.machine = machine
        self.env = machine.env
        self.cfg = cfg
        self.page_size = cfg.page_size
        self.total_pages = cfg.total_bytes // cfg.page_size
        """Pages of RAM."""
        self.reclaimable = cfg.reclaimable_bytes // cfg.page_size
        """Clean page-cache pages reclaim may drop."""
        self.reserved = 0
        """Pages taken by other kernel users (memory-pressure episodes)."""
        self.used = self.reclaimable
        """Pages in use: allocator pages, page cache and reserved."""
        self.min_pages = int(self.total_pages * cfg.watermark_min)
        self.low_pages = int(self.total_pages * cfg.watermark_low)
        self.high_pages = int(self.total_pages * cfg.watermark_high)
        self.vmap_lock = SpinLock(machine, "vmap_area_lock")
        """The single global lock that serialises vmalloc and vfree."""
        self.shrinkers: list[Shrinker] = []
        self.dependencies: list[tuple[str, Callable[[Thread], Gen]]] = []
        """Modelled reclaim dependencies, run by direct reclaim (e.g. writeback)."""
        self.vm_areas: dict[int, VmArea] = {}
        self._next_page = DIRECT_MAP_BASE
        self._next_vm = VMALLOC_BASE
        self._fail = machine.rng("memory.fail")
        self.in_reclaim: set[Thread] = set()
        self.stats = {"alloc_pages": 0, "alloc_fail": 0, "injected_fail": 0, "free_pages": 0,
                      "vmalloc": 0, "vfree": 0, "direct_reclaim": 0, "reclaimed": 0,
                      "kswapd_wake": 0}
        self._kswapd_wake: Any = None
        self._kswapd = machine.spawn("kswapd0", self._kswapd_loop)
        self._vfree_deferred: list[int] = []
        self._vfree_wake: Any = None
        self._vfree_thread = machine.spawn("vfree_deferred", self._vfree_loop)

    # --- accounting -----------------------------------------------------------------------
    @property
    def free(self) -> int:
        """Free pages."""
        return self.total_pages - self.used

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
    def _get_pages(self, t: Thread, n: int, flags: int) -> Gen:
        """Take `n` pages, reclaiming if allowed; True on success."""
        yield from t.sync()
        if self._injected_failure():
            self.stats["injected_fail"] += 1
            self.stats["alloc_fail"] += 1
            return False
        sleep_ok = not flags & KM_NOSLEEP
        # GFP_ATOMIC may dip below the min watermark (ALLOC_HARDER); KM_PUSHPAGE (__GFP_HIGH)
        # to half of it; a thread already in reclaim has PF_MEMALLOC (ALLOC_NO_WATERMARKS) and
        # never recurses into reclaim; other sleeping requests reclaim
        if t in self.in_reclaim:
            floor, sleep_ok = 0, False
        elif not sleep_ok:
            floor = self.min_pages // 4
        elif flags & KM_PUSHPAGE:
            floor = self.min_pages // 2
        else:
            floor = self.min_pages
        tries = 0
        while self.free - n < floor:
            if not sleep_ok or tries >= 16:
                self.stats["alloc_fail"] += 1
                self.machine.metrics.event("page_alloc_fail", pages=n, free=self.free,
                                           thread=t.name)
                return False
            tries += 1
            yield from self.direct_reclaim(t, n, flags)
        if self.free - n < self.low_pages:
            self.wake_kswapd()
        self.used += n
        self.stats["alloc_pages"] += n
        return True

    def alloc_pages(self, t: Thread, order: int, flags: int) -> Gen:
        """__get_free_pages: 2^order contiguous pages; their address, or None on failure."""
        n = 1 << order
        ok = yield from self._get_pages(t, n, flags)
        if not ok:
            return None
        t.charge("page_alloc", n)
        addr = self._next_page
        self._next_page += n * self.page_size
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
        self.used -= n
        self.stats["free_pages"] += n

    def vmalloc(self, t: Thread, nbytes: int, flags: int) -> Gen:
        """__vmalloc: pages first, then mapping under the global vmap lock; address or None.
        Like spl_vmalloc on the kernels of the SPL's reclaim deadlocks, the page-table
        allocation inside does not honour the caller's flags, so the whole request is made with
        KM_SLEEP (GFP_KERNEL) semantics: it may reclaim, do I/O and enter the file system."""
        pages = -(-nbytes // self.page_size)
        ok = yield from self._get_pages(t, pages, KM_SLEEP)
        if not ok:
            return None
        t.charge("page_alloc", pages)
        yield from self.vmap_lock.lock(t)
        t.charge("vmalloc_per_page", pages)
        addr = self._next_vm
        self._next_vm += (pages + 1) * self.page_size
        self.vm_areas[addr] = VmArea(addr, pages)
        yield from self.vmap_lock.unlock(t)
        self.stats["vmalloc"] += 1
        return addr

    def vfree(self, t: Thread, addr: int) -> Gen:
        """vfree: unmap under the vmap lock, then free the pages. In interrupt context the
        kernel never takes the vmap lock: the area goes on a list that a kernel thread frees
        later (vfree_deferred)."""
        if t.in_irq:
            self._vfree_deferred.append(addr)
            t.charge("atomic_op")
            if self._vfree_wake is not None and not self._vfree_wake.triggered:
                self._vfree_wake.succeed()
            return
        area = self.vm_areas.pop(addr)
        yield from self.vmap_lock.lock(t)
        t.charge("vfree_per_page", area.pages)
        yield from self.vmap_lock.unlock(t)
        t.charge("page_free", area.pages)
        self.used -= area.pages
        self.stats["vfree"] += 1

    # --- reclaim --------------------------------------------------------------------------
    def direct_reclaim(self, t: Thread, nr_pages: int, flags: int = 0) -> Gen:
        """try_to_free_pages: drop clean page cache, call the shrinkers, then, when that was
        not enough and the request may do I/O and enter the file system (not KM_PUSHPAGE,
        which is GFP_NOIO, nor KM_NOFS), run the modelled dependencies (which may block: that
        is how reclaim deadlocks arise)."""
        self.stats["direct_reclaim"] += 1
        m = self.machine.metrics
        m.event("direct_reclaim", thread=t.name, cpu=t.cpu.id, free=self.free, want=nr_pages)
        self.in_reclaim.add(t)
        want = max(nr_pages, SWAP_CLUSTER_MAX)
        got = yield from self._reclaim(t, want)
        if got < nr_pages and not flags & (KM_PUSHPAGE | KM_NOFS):
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
            while self.free < self.high_pages:
                got = yield from self._reclaim(t, max(SWAP_CLUSTER_MAX, self.high_pages - self.free))
                if not got:
                    break
