"""`global_lock`: the baseline every figure is compared against — no per-CPU caching, one spinlock
per cache around its slab lists, slabs straight from the page allocator.

Every allocation and free takes the cache's lock with IRQs saved (`spin_lock_irqsave`, as a
cache usable from interrupt context must), so this is what an object cache costs when every CPU
meets every other CPU on one lock. It is the structure of Bonwick's 1994 slab allocator before
the 2001 magazine layer: slabs on a partial list, objects constructed once when the slab is
created and destructed when it is destroyed.

Slab geometry (chosen for the baseline, not taken from a seed): objects are rounded up to the
alignment; a slab is the smallest power-of-two number of pages that holds at least
`objs_per_slab_target` objects, capped at `max_slab_order`; objects larger than the cap get one
object per slab. A slab of objects smaller than 1/8 page keeps its 64-byte descriptor on the slab
(like Bonwick's embedded slabs), otherwise the descriptor is off-slab and counted as metadata.
Empty slabs beyond `keep_empty_slabs` are returned to the page allocator when they empty.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from policies.base import CacheSpec, CacheStats, Gen, InvariantError, Policy, Tunable
from simcore.cpu import Thread
from simcore.spinlock import SpinLock

SLAB_DESC_BYTES = 64


@dataclass(eq=False)
class Slab:
    """One slab: a run of pages cut into `n` objects."""

    base: int
    n: int
    free: list[int] = field(default_factory=list)
    """Free object addresses, LIFO."""

    @property
    def inuse(self) -> int:
        return self.n - len(self.free)


@dataclass(eq=False)
class GlobalCache:
    """A cache of the global-lock policy."""

    name: str
    spec: CacheSpec
    chunk: int
    order: int
    objs_per_slab: int
    on_slab_desc: bool
    lock: SpinLock
    partial: dict[Slab, None] = field(default_factory=dict)
    """Slabs with free and allocated objects, in insertion order; allocation takes the most
    recently inserted (dicts give O(1) removal)."""
    full: dict[Slab, None] = field(default_factory=dict)
    empty: list[Slab] = field(default_factory=list)
    owner: dict[int, Slab] = field(default_factory=dict)
    """Object address -> its slab."""
    inuse: int = 0
    grown: int = 0
    reaped: int = 0
    allocs: int = 0
    frees: int = 0
    alloc_fail: int = 0
    call_ns: int = 0
    """The path costs, from the machine's cost table when the cache is made: "call" (an
    entry point), "slab_obj_op" (one object off or onto a slab) and "list_op" (a slab moved
    between lists); the hot paths charge their sums (see `GlobalLockPolicy.alloc`)."""
    obj_ns: int = 0
    list_ns: int = 0
    hit_tally: defaultdict[int, int] = field(default_factory=lambda: defaultdict(int))
    """Latencies of this cache's allocations that found a free object (path histogram
    alloc.hit), ns -> count, not yet recorded (`GlobalLockPolicy.fold_paths` records them)."""
    grow_tally: defaultdict[int, int] = field(default_factory=lambda: defaultdict(int))
    """The same for allocations that grew the cache first (alloc.grow)."""
    free_tally: defaultdict[int, int] = field(default_factory=lambda: defaultdict(int))
    """The same for frees (free.hit)."""


class GlobalLockPolicy(Policy):
    """One lock per cache, no per-CPU caching (the baseline)."""

    name = "global_lock"
    summary = "baseline: one spinlock per cache around its slab lists, no per-CPU caching"
    tunables = (
        Tunable("objs_per_slab_target", 8, "objects a slab should hold at least", minimum=1),
        Tunable("max_slab_order", 5, "largest slab as a page order (2^order pages)", minimum=0),
        Tunable("keep_empty_slabs", 1, "empty slabs kept per cache before freeing", minimum=0),
    )

    def __init__(self, machine: Any, tunables: dict[str, Any] | None = None) -> None:
        super().__init__(machine, tunables)
        machine.metrics.add_fold(self.fold_paths)

    def create_cache(self, spec: CacheSpec) -> GlobalCache:
        page = self.machine.memory.page_size
        chunk = -(-spec.size // spec.align) * spec.align
        on_slab = chunk < page // 8
        order = 0
        while True:
            usable = (page << order) - (SLAB_DESC_BYTES if on_slab else 0)
            n = usable // chunk
            if n >= self.tun["objs_per_slab_target"] or order >= self.tun["max_slab_order"]:
                break
            order += 1
        while n < 1:
            order += 1
            n = ((page << order) - (SLAB_DESC_BYTES if on_slab else 0)) // chunk
        lock = SpinLock(self.machine, f"{spec.name}->lock")
        costs = self.machine.costs
        return GlobalCache(spec.name, spec, chunk, order, n, on_slab, lock,
                           call_ns=costs["call"], obj_ns=costs["slab_obj_op"],
                           list_ns=costs["list_op"])

    def fold_paths(self) -> None:
        """Record every cache's tallied path latencies into the path histograms alloc.hit,
        alloc.grow and free.hit (Metrics.fold; a histogram is made when it first has a value
        to record, as recording each value would make it)."""
        for c in self.caches:
            self._fold_cache(c)

    def _fold_cache(self, c: GlobalCache) -> None:
        hist = self.machine.metrics.hist
        for name, tally in (("alloc.hit", c.hit_tally), ("alloc.grow", c.grow_tally),
                            ("free.hit", c.free_tally)):
            if tally:
                h = hist(name)
                for v, n in tally.items():
                    h.record(v, n)
                tally.clear()

    # alloc path: IRQs saved, cache lock held while an object is taken from a slab
    def alloc(self, t: Thread, c: GlobalCache, flags: int) -> Gen:
        """Take an object from the most recent partial slab (or an empty one) under the cache
        lock; grow with the lock dropped when none is free.

        The local work between two synchronisation points is charged as one sum (the order of
        charges between them is not observable): "call" before the lock; "slab_obj_op", plus
        "list_op" when the slab fills, under it. Each charge is `Thread.charge_ns`, inlined.
        The latency is tallied on the cache (`fold_paths` records it)."""
        p = t.pending
        start = t.env._now + p
        t.pending = p + c.call_ns
        if not t._batched and c.call_ns:
            t._steps.append(c.call_ns)
        grew = False
        while True:
            irqf = yield from c.lock.lock_irqsave(t)
            slab = next(reversed(c.partial)) if c.partial else (
                c.empty.pop() if c.empty else None)
            if slab is not None:
                obj = slab.free.pop()
                ns = c.obj_ns
                if not slab.free:
                    c.partial.pop(slab, None)
                    c.full[slab] = None
                    ns += c.list_ns
                elif slab not in c.partial:
                    c.partial[slab] = None
                t.pending += ns
                if not t._batched and ns:
                    t._steps.append(ns)
                c.inuse += 1
                c.allocs += 1
                yield from c.lock.unlock_irqrestore(t, irqf)
                (c.grow_tally if grew else c.hit_tally)[t.env._now + t.pending - start] += 1
                return obj
            yield from c.lock.unlock_irqrestore(t, irqf)
            ok = yield from self.grow(t, c, flags)
            if not ok:
                c.alloc_fail += 1
                self.machine.metrics.event("alloc_fail", cache=c.name, cpu=t.cpu.id)
                return None
            grew = True

    def grow(self, t: Thread, c: GlobalCache, flags: int) -> Gen:
        """Allocate a slab's pages (may reclaim if the caller may sleep), construct its objects
        with no lock held, then link it on the empty list under the lock."""
        self.machine.metrics.event("grow_start", cache=c.name, cpu=t.cpu.id)
        base = yield from self.machine.memory.alloc_pages(t, c.order, flags)
        if base is None:
            return False
        offset = SLAB_DESC_BYTES if c.on_slab_desc else 0
        slab = Slab(base, c.objs_per_slab)
        slab.free = [base + offset + i * c.chunk for i in range(c.objs_per_slab - 1, -1, -1)]
        if not c.on_slab_desc:
            t.charge("kmalloc")
        if c.spec.ctor_cost:
            t.charge_ns(c.spec.ctor_cost * c.objs_per_slab)
        irqf = yield from c.lock.lock_irqsave(t)
        for obj in slab.free:
            c.owner[obj] = slab
        c.empty.append(slab)
        c.grown += 1
        t.charge("list_op")
        yield from c.lock.unlock_irqrestore(t, irqf)
        self.machine.metrics.event("grow_end", cache=c.name, cpu=t.cpu.id)
        return True

    # free path: IRQs saved, cache lock held while the object goes back to its slab
    def free(self, t: Thread, c: GlobalCache, obj: int) -> Gen:
        """Return the object to its slab under the cache lock; a slab that empties beyond
        `keep_empty_slabs` is destroyed after the lock is dropped.

        Charged as `alloc` is: "call" before the lock; under it one sum of "slab_obj_op" and
        a "list_op" for each list the slab leaves (full, partial)."""
        p = t.pending
        start = t.env._now + p
        t.pending = p + c.call_ns
        if not t._batched and c.call_ns:
            t._steps.append(c.call_ns)
        slab = c.owner[obj]
        irqf = yield from c.lock.lock_irqsave(t)
        was_full = not slab.free
        slab.free.append(obj)
        ns = c.obj_ns
        c.inuse -= 1
        c.frees += 1
        victim = None
        if was_full:
            del c.full[slab]
            ns += c.list_ns
            if slab.n > 1:
                c.partial[slab] = None
        if len(slab.free) == slab.n:
            c.partial.pop(slab, None)
            ns += c.list_ns
            if len(c.empty) >= self.tun["keep_empty_slabs"]:
                victim = slab
            else:
                c.empty.append(slab)
        t.pending += ns
        if not t._batched and ns:
            t._steps.append(ns)
        yield from c.lock.unlock_irqrestore(t, irqf)
        if victim is not None:
            yield from self._destroy_slab(t, c, victim)
        c.free_tally[t.env._now + t.pending - start] += 1

    def _destroy_slab(self, t: Thread, c: GlobalCache, slab: Slab) -> Gen:
        if c.spec.dtor_cost:
            t.charge_ns(c.spec.dtor_cost * slab.n)
        for obj in slab.free:
            del c.owner[obj]
        c.reaped += 1
        yield from self.machine.memory.free_pages(t, slab.base, c.order)

    def reap(self, t: Thread, c: GlobalCache) -> Gen:
        """Free every empty slab."""
        irqf = yield from c.lock.lock_irqsave(t)
        victims, c.empty = c.empty, []
        yield from c.lock.unlock_irqrestore(t, irqf)
        for slab in victims:
            yield from self._destroy_slab(t, c, slab)
        self.machine.metrics.event("reap", cache=c.name, slabs=len(victims))

    def destroy(self, t: Thread, c: GlobalCache) -> Gen:
        """kmem_cache_destroy: every object must have been freed; release all slabs."""
        if c.inuse:
            raise InvariantError(f"{c.name}: destroy with {c.inuse} objects in use")
        yield from self.reap(t, c)
        self._fold_cache(c)
        self.caches.remove(c)

    def stats(self, c: GlobalCache) -> CacheStats:
        slabs = len(c.partial) + len(c.full) + len(c.empty)
        free = sum(len(s.free) for s in c.partial) + sum(s.n for s in c.empty)
        page = self.machine.memory.page_size
        return CacheStats(
            name=c.name, obj_size=c.spec.size, objs_inuse=c.inuse, objs_cached=0, objs_free=free,
            slabs=slabs, slabs_partial=len(c.partial), slabs_empty=len(c.empty),
            bytes_slab=slabs * (page << c.order),
            bytes_meta=0 if c.on_slab_desc else slabs * SLAB_DESC_BYTES,
            objs_per_slab=c.objs_per_slab, pages_per_slab=1 << c.order,
            extra={"allocs": c.allocs, "frees": c.frees, "grown": c.grown, "reaped": c.reaped,
                   "alloc_fail": c.alloc_fail})

    def check_invariants(self) -> None:
        for c in self.caches:
            slabs = [*c.partial, *c.full, *c.empty]
            inuse = sum(s.inuse for s in slabs)
            if inuse != c.inuse:
                raise InvariantError(f"{c.name}: slabs hold {inuse} in use, counter {c.inuse}")
            if len(c.owner) != len(slabs) * c.objs_per_slab:
                raise InvariantError(f"{c.name}: owner map {len(c.owner)} != slab capacity")
            for s in c.partial:
                if not 0 < len(s.free) < s.n or (s.n == 1):
                    raise InvariantError(f"{c.name}: slab on partial list is not partial")
            for s in c.full:
                if s.free:
                    raise InvariantError(f"{c.name}: slab on full list has free objects")
            for s in c.empty:
                if len(s.free) != s.n:
                    raise InvariantError(f"{c.name}: slab on empty list has objects in use")
            if c.allocs - c.frees != c.inuse:
                raise InvariantError(f"{c.name}: allocs - frees != in use")
