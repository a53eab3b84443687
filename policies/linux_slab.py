"""`linux_slab`: the Linux SLAB allocator (seeds/003: Linux 2.6.17 mm/slab.c; seeds/004: the
percpu allocator for CPU caches, Linux 3.18).

Read side by side with the seed:

- allocation: `kmem_cache_alloc` -> `__cache_alloc` (IRQs saved) -> `____cache_alloc` (array
  hit) or `cache_alloc_refill` (shared array first, then partial head, then free head, then
  `cache_grow` and retry); node-directed `kmem_cache_alloc_node` -> `__cache_alloc_node`;
- growth: `cache_grow` (colour step under list_lock, IRQs on only for requests that may sleep,
  pages then constructors, link at the tail of slabs_free);
- free: `kmem_cache_free` -> `__cache_free` (alien check, array push or `cache_flusharray`:
  shared array, else `free_block`, which destroys a slab that empties while the node holds
  more than free_limit free objects);
- NUMA: `cache_free_alien`, `__drain_alien_cache`, `reap_alien` (nodes > 1 only);
- the reaper: `start_cpu_timer` / `cache_reap` per CPU every REAPTIMEOUT_CPUC (2 s) after the
  previous pass, first at HZ + 3 x cpu jiffies; per-node work every REAPTIMEOUT_LIST3 (4 s)
  with a per-cache offset; `drain_array` with the touched rule; free slabs trimmed
  ceil(free_limit / (5 num)) per visit unless free_touched; a pass is skipped when
  cache_chain_mutex is busy;
- shrink: `kmem_cache_shrink` -> `drain_cpu_caches` (every CPU array, alien and shared array)
  then every free slab;
- tunables: `enable_cpucache` defaults; free_limit = (1 + CPUs on node) x batchcount + num;
- statistics: the STATS counters and `/proc/slabinfo` 2.1 (statistics) with s_show's layout.

Switches for behaviour that changed after 2.6.17 (defaults are 2.6.17):
`shared_touched_on_refill` (4.x marks the shared array touched on every refill from it, so a
busy shared array is spared by the reaper), `destroy_under_lock` (3.x destroys slabs after
dropping list_lock), `reap_from_free_head` (2.6.17 cache_reap takes the head of slabs_free;
drain_freelist the tail), `percpu_cpu_cache` (patch 004: arrays for every possible CPU from the
percpu allocator, 16 + 8 x limit bytes, no kmalloc rounding).

Deliberate deviations from the seed:

- Off-slab descriptors (objects >= PAGE_SIZE/8) are charged as a kmalloc cost and counted as
  metadata (rounded to their general cache size); they are not allocated from a modelled
  size-N cache, so the nested slabp_cache allocation and its lock are not simulated.
- The STATS counters are always kept and always printed (the kernel keeps them only in
  CONFIG_DEBUG_SLAB builds); the O(free slabs) walk that STATS adds to every flush is charged
  only when `STATS` is true.
- `kmem_cache_shrink`'s drain IPIs run as interrupts on every other CPU (raise_irq); the caller
  sleeps until all have run instead of spinning in on_each_cpu.
- Retuning through /proc/slabinfo writes is not modelled at run time: limit, batchcount and
  shared are set at creation (`cpucache_limit`, `cpucache_batchcount`, `cpucache_shared`).
- Colouring is computed and rotated per node (colour_next) but has no cache effect in the model.
- Task migration during a sleeping grow follows the simulated scheduler: the array is re-read
  after cache_grow, as in the seed.
- One page allocator serves every node (memory is not per node).
"""

from __future__ import annotations

import zlib
from typing import Any

from policies.base import CacheSpec, CacheStats, Gen, InvariantError, Policy, Tunable
from policies.linux_slab_geometry import (
    ALIEN_LIMIT,
    ARRAY_HEADER_2617,
    CpuCacheTunables,
    align_up,
    cpu_array_bytes,
    enable_cpucache,
    geometry,
    kmalloc_size,
)
from policies.linux_slab_structs import ArrayCache, KmemList3, LinuxCache, LinuxSlab
from simcore.cpu import Thread
from simcore.flags import can_sleep
from simcore.mutex import Mutex
from simcore.spinlock import SpinLock
from simcore.timer import PeriodicWork

BATCHREFILL_LIMIT = 16
"""First refill after an untouched interval takes at most this many objects."""


class LinuxSlabPolicy(Policy):
    """Linux 2.6.17 SLAB: per-CPU array caches, shared and alien arrays, three slab lists per
    node, free_limit, and the cache_reap timer."""

    name = "linux_slab"
    summary = ("Linux SLAB (2.6.17 mm/slab.c): per-CPU array caches, shared/alien arrays, "
               "free_limit, cache_reap; patch 004 percpu accounting")
    tunables = (
        Tunable("shared_touched_on_refill", False,
                "4.x: a refill from the shared array marks it touched, so cache_reap spares a "
                "busy shared array (2.6.17: only alien drains mark it)"),
        Tunable("destroy_under_lock", True,
                "2.6.17 free_block destroys slabs holding list_lock with IRQs off; false: 3.x "
                "slabs_destroy after the lock is dropped"),
        Tunable("reap_from_free_head", True,
                "2.6.17 cache_reap frees from the head of slabs_free; false: drain_freelist "
                "takes the tail"),
        Tunable("percpu_cpu_cache", False,
                "patch 004: per-CPU arrays from the percpu allocator for every possible CPU, "
                "16 + pointer x limit bytes, no kmalloc rounding"),
        Tunable("nr_cpu_ids", 0, "possible CPUs for patch 004 accounting (0: the machine's CPUs)",
                minimum=0),
        Tunable("sizeof_pointer", 8, "pointer size in bytes for array accounting (4: 32-bit)",
                choices=(4, 8)),
        Tunable("STATS", False, "charge the O(free slabs) walk STATS adds to cache_flusharray"),
        Tunable("slab_break_gfp_order", 1,
                "calculate_slab_order stops at this order (1 when RAM > 32 MiB)", minimum=0),
        Tunable("cpucache_limit", 0, "per-CPU array limit for every cache (0: enable_cpucache)",
                minimum=0),
        Tunable("cpucache_batchcount", 0, "batchcount (0: (limit + 1) / 2)", minimum=0),
        Tunable("cpucache_shared", -1, "shared factor (-1: enable_cpucache's 8 / 0)",
                minimum=-1),
        Tunable("cache_reap", True, "run the per-CPU cache_reap timers"),
    )

    def __init__(self, machine: Any, tunables: dict[str, Any] | None = None) -> None:
        super().__init__(machine, tunables)
        m = self.machine
        self.cache_chain_mutex = Mutex(m, "cache_chain_mutex")
        self.reap_skipped = 0
        """cache_reap passes skipped because cache_chain_mutex was busy."""
        self.reapers: list[PeriodicWork] = []
        self.reap_node = [(cpu.node + 1) % m.nodes for cpu in m.cpus]
        """Per-CPU NUMA reap rotor (next_reap_node)."""
        mt = m.metrics
        self._h_hit = mt.hist("alloc.hit")
        self._h_refill = mt.hist("alloc.refill")
        self._h_grow = mt.hist("alloc.grow")
        self._h_free_hit = mt.hist("free.hit")
        self._h_flush = mt.hist("free.flush")
        c = m.costs
        self._alloc_hit_ns = c["call"] + c["irq_disable"] + c["magazine_pop"] + c["irq_enable"]
        self._free_hit_ns = c["call"] + c["irq_disable"] + c["magazine_push"] + c["irq_enable"]
        self._hz_ns = 1_000_000_000 // m.hz

    # --- cache creation ---------------------------------------------------------------------
    def create_cache(self, spec: CacheSpec) -> LinuxCache:
        """kmem_cache_create + setup_cpu_cache/enable_cpucache + alloc_kmemlist: geometry, one
        array per CPU, one kmem_list3 per node with its shared array and alien arrays."""
        m = self.machine
        geo = geometry(spec.size, spec.align, "SLAB_HWCACHE_ALIGN" in spec.flags,
                       "SLAB_RECLAIM_ACCOUNT" in spec.flags, m.memory.page_size,
                       self.tun["slab_break_gfp_order"])
        d = enable_cpucache(geo.buffer_size, m.memory.page_size, smp=m.ncpus > 1)
        limit = self.tun["cpucache_limit"] or d.limit
        batch = self.tun["cpucache_batchcount"] or (limit + 1) // 2
        shared = d.shared if self.tun["cpucache_shared"] < 0 else self.tun["cpucache_shared"]
        if batch > limit:
            raise ValueError(f"cpucache_batchcount {batch} > limit {limit}")
        tun = CpuCacheTunables(limit, batch, shared)
        arrays = [ArrayCache(limit, batch) for _ in m.cpus]
        nodes = []
        hz = self._hz_ns
        offset = (zlib.crc32(spec.name.encode()) % (4 * m.hz)) * hz
        for node in range(m.nodes):
            ncpu = len(m.cpus_of_node(node))
            l3 = KmemList3(node, SpinLock(m, f"{spec.name}->list_lock"),
                           (1 + ncpu) * batch + geo.num,
                           next_reap=4 * m.hz * hz + offset)
            if shared:
                l3.shared = ArrayCache(shared * batch, 0xBAADF00D)
            if m.nodes > 1:
                alien_limit = 1 if limit == 1 else ALIEN_LIMIT
                for other in range(m.nodes):
                    if other != node:
                        l3.alien[other] = ArrayCache(
                            alien_limit, 0xBAADF00D,
                            lock=SpinLock(m, f"{spec.name}->alien_lock"))
            nodes.append(l3)
        return LinuxCache(spec.name, spec, geo, tun, arrays, nodes)

    def start(self) -> None:
        """start_cpu_timer: each CPU's cache_reap first after HZ + 3 x cpu jiffies, then
        REAPTIMEOUT_CPUC (2 s) after each pass ends."""
        if not self.tun["cache_reap"]:
            return
        m = self.machine
        for cpu in m.cpus:
            self.reapers.append(PeriodicWork(
                m, f"events/{cpu.id}:cache_reap", 2 * m.hz * self._hz_ns, self.cache_reap,
                cpu=cpu.id, first_delay=(m.hz + 3 * cpu.id) * self._hz_ns))

    # --- allocation -------------------------------------------------------------------------
    def alloc(self, t: Thread, c: LinuxCache, flags: int) -> Gen:
        """__cache_alloc: IRQs saved; ____cache_alloc pops this CPU's array (allochit) or
        counts allocmiss and runs cache_alloc_refill."""
        start = t.now
        t.charge("call")
        was_off = t.local_irq_save()
        ac = c.array[t.cpu.id]
        hist = self._h_hit
        if ac.entry:
            c.allochit += 1
            ac.touched = True
            obj = ac.entry.pop()
            t.charge("magazine_pop")
        else:
            c.allocmiss += 1
            t.slab_grew = False
            obj = yield from self.cache_alloc_refill(t, c, flags)
            hist = self._h_grow if t.slab_grew else self._h_refill
        yield from t.local_irq_restore(was_off)
        if obj is None:
            c.alloc_fail += 1
            self.machine.metrics.event("alloc_fail", cache=c.name, cpu=t.cpu.id)
            return None
        c.inuse += 1
        c.allocs += 1
        hist.record(t.now - start)
        return obj

    def alloc_fast(self, t: Thread, c: LinuxCache, flags: int) -> int | None:
        """The array hit of __cache_alloc as a plain call (no interrupt due meanwhile)."""
        ac = c.array[t.cpu.id]
        if not ac.entry or not t.irq_free_for(self._alloc_hit_ns):
            return None
        start = t.pending
        t.charge("call")
        was_off = t.local_irq_save()
        c.allochit += 1
        ac.touched = True
        obj = ac.entry.pop()
        t.charge("magazine_pop")
        t.local_irq_restore_fast(was_off)
        c.inuse += 1
        c.allocs += 1
        self._h_hit.record(t.pending - start)
        return obj

    def cache_alloc_refill(self, t: Thread, c: LinuxCache, flags: int) -> Gen:
        """cache_alloc_refill (IRQs off): batchcount objects (16 after an untouched interval)
        from the shared array, else from the head of slabs_partial / slabs_free under
        list_lock; with nothing found cache_grow once and retry. NULL if grow failed and the
        array is still empty."""
        while True:
            ac = c.array[t.cpu.id]
            node = t.cpu.node
            l3 = c.nodelists[node]
            n = ac.batchcount
            if not ac.touched and n > BATCHREFILL_LIMIT:
                n = BATCHREFILL_LIMIT
            yield from l3.list_lock.lock(t)
            if l3.shared is not None and self.transfer_objects(t, ac, l3.shared, n):
                if self.tun["shared_touched_on_refill"]:
                    l3.shared.touched = True
            else:
                taken = 0
                while n > 0:
                    slab = l3.slabs_partial.head
                    if slab is None:
                        l3.free_touched = True
                        slab = l3.slabs_free.head
                        if slab is None:
                            break
                    while slab.inuse < c.geo.num and n > 0:
                        c.num_allocations += 1
                        c.num_active += 1
                        if c.num_active > c.high_mark:
                            c.high_mark = c.num_active
                        ac.entry.append(self.slab_get_obj(t, slab))
                        taken += 1
                        n -= 1
                    slab.on.remove(slab)
                    if not slab.free:
                        l3.slabs_full.add(slab)
                    else:
                        l3.slabs_partial.add(slab)
                    t.charge("list_op")
                l3.free_objects -= taken
            yield from l3.list_lock.unlock(t)
            if not ac.entry:
                ok = yield from self.cache_grow(t, c, flags, node)
                t.slab_grew = True
                ac = c.array[t.cpu.id]
                if not ok and not ac.entry:
                    return None
                if not ac.entry:
                    continue
            ac.touched = True
            t.charge("magazine_pop")
            return ac.entry.pop()

    def slab_get_obj(self, t: Thread, slab: LinuxSlab) -> int:
        """slab_get_obj: the object at slabp->free; inuse++ (list_lock held)."""
        slab.inuse += 1
        t.charge("slab_obj_op")
        return slab.free.pop()

    def transfer_objects(self, t: Thread, to: ArrayCache, frm: ArrayCache, maximum: int) -> int:
        """transfer_objects: move the newest min(from.avail, max, to.limit - to.avail)
        pointers; 2.6.17 marks the destination touched."""
        nr = min(frm.avail, maximum, to.limit - to.avail)
        if nr <= 0:
            return 0
        to.entry.extend(frm.entry[-nr:])
        del frm.entry[-nr:]
        t.charge("object_move", nr)
        if not self.tun["shared_touched_on_refill"]:
            to.touched = True
        return nr

    def alloc_node(self, t: Thread, c: LinuxCache, flags: int, nodeid: int) -> Gen:
        """kmem_cache_alloc_node: the local node takes the array path; another node's objects
        come from __cache_alloc_node, one object per list_lock round trip (node_allocs)."""
        if nodeid == -1 or nodeid == t.cpu.node:
            return (yield from self.alloc(t, c, flags))
        start = t.now
        t.charge("call")
        was_off = t.local_irq_save()
        obj = yield from self.cache_alloc_node(t, c, flags, nodeid)
        yield from t.local_irq_restore(was_off)
        if obj is None:
            c.alloc_fail += 1
            return None
        c.inuse += 1
        c.allocs += 1
        self._h_refill.record(t.now - start)
        return obj

    def cache_alloc_node(self, t: Thread, c: LinuxCache, flags: int, nodeid: int) -> Gen:
        """__cache_alloc_node: one object from the partial (else free) head of `nodeid`."""
        l3 = c.nodelists[nodeid]
        while True:
            yield from l3.list_lock.lock(t)
            slab = l3.slabs_partial.head
            if slab is None:
                l3.free_touched = True
                slab = l3.slabs_free.head
            if slab is not None:
                c.node_allocs += 1
                c.num_active += 1
                if c.num_active > c.high_mark:
                    c.high_mark = c.num_active
                obj = self.slab_get_obj(t, slab)
                l3.free_objects -= 1
                slab.on.remove(slab)
                (l3.slabs_full if not slab.free else l3.slabs_partial).add(slab)
                t.charge("list_op")
                yield from l3.list_lock.unlock(t)
                return obj
            yield from l3.list_lock.unlock(t)
            ok = yield from self.cache_grow(t, c, flags, nodeid)
            if not ok:
                return None

    # --- growth -------------------------------------------------------------------------------
    def cache_grow(self, t: Thread, c: LinuxCache, flags: int, nodeid: int) -> Gen:
        """cache_grow (called with IRQs off): colour step under list_lock; IRQs on only for a
        request that may sleep; kmem_getpages, off-slab descriptor, constructors; IRQs off;
        link the slab at the tail of slabs_free, grown++, free_objects += num."""
        m = self.machine
        geo = c.geo
        l3 = c.nodelists[nodeid]
        m.metrics.event("grow_start", cache=c.name, cpu=t.cpu.id)
        yield from l3.list_lock.lock(t)
        offset = l3.colour_next * geo.colour_off
        l3.colour_next += 1
        if l3.colour_next >= geo.colour:
            l3.colour_next = 0
        yield from l3.list_lock.unlock(t)
        sleeping = can_sleep(flags)
        if sleeping:
            yield from t.local_irq_enable()
        base = yield from m.memory.alloc_pages(t, geo.gfporder, flags)
        if base is None:
            if sleeping:
                t.local_irq_disable()
            return False
        if geo.off_slab:
            t.charge("kmalloc")
            start = base + offset
        else:
            start = base + offset + geo.slab_size
        slab = LinuxSlab(base, geo.num, nodeid, offset)
        slab.free = [start + i * geo.buffer_size for i in range(geo.num - 1, -1, -1)]
        if c.spec.ctor_cost:
            t.charge_ns(c.spec.ctor_cost * geo.num)
        if sleeping:
            t.local_irq_disable()
        yield from l3.list_lock.lock(t)
        for obj in slab.free:
            c.owner[obj] = slab
        l3.slabs_free.add_tail(slab)
        c.grown += 1
        l3.free_objects += geo.num
        t.charge("list_op")
        yield from l3.list_lock.unlock(t)
        m.metrics.event("grow_end", cache=c.name, cpu=t.cpu.id)
        return True

    # --- free -----------------------------------------------------------------------------------
    def free(self, t: Thread, c: LinuxCache, obj: int) -> Gen:
        """__cache_free (IRQs saved): a remote-node object goes to cache_free_alien; else push
        on this CPU's array (freehit) or cache_flusharray first (freemiss)."""
        start = t.now
        t.charge("call")
        was_off = t.local_irq_save()
        c.inuse -= 1
        c.frees += 1
        hist = self._h_free_hit
        node = c.owner[obj].nodeid if self.machine.nodes > 1 else t.cpu.node
        if node != t.cpu.node:
            yield from self.cache_free_alien(t, c, obj, node)
            hist = self._h_flush
        else:
            ac = c.array[t.cpu.id]
            if ac.avail < ac.limit:
                c.freehit += 1
            else:
                c.freemiss += 1
                yield from self.cache_flusharray(t, c, ac)
                hist = self._h_flush
            ac.entry.append(obj)
            t.charge("magazine_push")
        yield from t.local_irq_restore(was_off)
        hist.record(t.now - start)

    def free_fast(self, t: Thread, c: LinuxCache, obj: int) -> bool:
        """The local array push of __cache_free as a plain call."""
        ac = c.array[t.cpu.id]
        if ac.avail >= ac.limit or not t.irq_free_for(self._free_hit_ns):
            return False
        if self.machine.nodes > 1 and c.owner[obj].nodeid != t.cpu.node:
            return False
        start = t.pending
        t.charge("call")
        was_off = t.local_irq_save()
        c.inuse -= 1
        c.frees += 1
        c.freehit += 1
        ac.entry.append(obj)
        t.charge("magazine_push")
        t.local_irq_restore_fast(was_off)
        self._h_free_hit.record(t.pending - start)
        return True

    def cache_flusharray(self, t: Thread, c: LinuxCache, ac: ArrayCache) -> Gen:
        """cache_flusharray: the oldest batchcount entries go to the shared array if it has
        room (as many as fit), else to free_block; the rest move down."""
        n = ac.batchcount
        l3 = c.nodelists[t.cpu.node]
        yield from l3.list_lock.lock(t)
        shared = l3.shared
        room = shared.limit - shared.avail if shared is not None else 0
        victims: list[LinuxSlab] = []
        if room > 0:
            n = min(n, room)
            shared.entry.extend(ac.entry[:n])
            t.charge("object_move", n)
        else:
            victims = self.free_block(t, c, ac.entry[:n])
        nfree = len(l3.slabs_free)
        if self.tun["STATS"]:
            t.charge("list_op", nfree)
        if nfree > c.max_freeable:
            c.max_freeable = nfree
        yield from l3.list_lock.unlock(t)
        del ac.entry[:n]
        yield from self._destroy_after_unlock(t, c, victims)

    def free_block(self, t: Thread, c: LinuxCache, objs: list[int]) -> list[LinuxSlab]:
        """free_block (list_lock held): each object back to its slab; a slab that empties is
        destroyed when the node holds more than free_limit free objects, else put at the
        head of slabs_free; a slab still in use goes to the tail of slabs_partial. Returns the
        slabs to destroy after the lock is dropped (empty with destroy_under_lock)."""
        num = c.geo.num
        later: list[LinuxSlab] = []
        for obj in objs:
            slab = c.owner[obj]
            l3 = c.nodelists[slab.nodeid]
            slab.on.remove(slab)
            slab.free.append(obj)
            slab.inuse -= 1
            c.num_active -= 1
            l3.free_objects += 1
            t.charge("slab_obj_op")
            t.charge("list_op")
            if slab.inuse == 0:
                if l3.free_objects > l3.free_limit:
                    l3.free_objects -= num
                    if self.tun["destroy_under_lock"]:
                        self.slab_destroy(t, c, slab, "free_limit")
                    else:
                        later.append(slab)
                else:
                    l3.slabs_free.add(slab)
            else:
                l3.slabs_partial.add_tail(slab)
        return later

    def _destroy_after_unlock(self, t: Thread, c: LinuxCache, slabs: list[LinuxSlab]) -> Gen:
        """3.x slabs_destroy: destroy outside list_lock."""
        for slab in slabs:
            self.slab_destroy(t, c, slab, "free_limit")
        if slabs:
            yield from t.sync()

    def slab_destroy(self, t: Thread, c: LinuxCache, slab: LinuxSlab, why: str) -> None:
        """slab_destroy: destructors, kmem_freepages, the off-slab descriptor back to its
        general cache. Charged in the caller's context (under list_lock in 2.6.17's
        free_block)."""
        geo = c.geo
        if c.spec.dtor_cost:
            t.charge_ns(c.spec.dtor_cost * geo.num)
        for obj in slab.free:
            del c.owner[obj]
        self.machine.memory.release_pages(t, slab.base, geo.gfporder)
        if geo.off_slab:
            t.charge("kmalloc")
        if why == "free_limit":
            c.destroyed += 1
        self.machine.metrics.event("slab_destroy", cache=c.name, cpu=t.cpu.id, why=why)

    # --- NUMA -------------------------------------------------------------------------------
    def cache_free_alien(self, t: Thread, c: LinuxCache, obj: int, nodeid: int) -> Gen:
        """cache_free_alien: node_frees++; push on this node's alien array for `nodeid`,
        draining it into that node first when full (node_overflow++)."""
        c.node_frees += 1
        alien = c.nodelists[t.cpu.node].alien.get(nodeid)
        if alien is None:
            rl3 = c.nodelists[nodeid]
            yield from rl3.list_lock.lock(t)
            victims = self.free_block(t, c, [obj])
            yield from rl3.list_lock.unlock(t)
            yield from self._destroy_after_unlock(t, c, victims)
            return
        assert alien.lock is not None
        yield from alien.lock.lock(t)
        if alien.avail == alien.limit:
            c.node_overflow += 1
            yield from self.drain_alien_cache(t, c, alien, nodeid)
        alien.entry.append(obj)
        t.charge("magazine_push")
        yield from alien.lock.unlock(t)

    def drain_alien_cache(self, t: Thread, c: LinuxCache, alien: ArrayCache, node: int) -> Gen:
        """__drain_alien_cache (alien lock held): under the remote list_lock, as much as fits
        into the remote shared array (newest first), the rest to free_block."""
        if not alien.avail:
            return
        rl3 = c.nodelists[node]
        yield from rl3.list_lock.lock(t)
        if rl3.shared is not None:
            self.transfer_objects(t, rl3.shared, alien, alien.avail)
            rl3.shared.touched = True
        victims = self.free_block(t, c, list(alien.entry))
        alien.entry.clear()
        yield from rl3.list_lock.unlock(t)
        yield from self._destroy_after_unlock(t, c, victims)

    # --- the reaper -------------------------------------------------------------------------
    def cache_reap(self, t: Thread) -> Gen:
        """cache_reap on this CPU: skip the pass if cache_chain_mutex is busy; for every cache
        (newest first) reap_alien, drain_array of this CPU's array, and when next_reap is due
        the node-level work: drain the shared array and free slabs unless free_touched."""
        ok = yield from self.cache_chain_mutex.trylock(t)
        if not ok:
            self.reap_skipped += 1
            self.machine.metrics.event("reap_skip", cpu=t.cpu.id)
            return
        m = self.machine
        node = t.cpu.node
        destroyed = drained = 0
        for c in reversed(self.caches):
            l3 = c.nodelists[node]
            yield from self.reap_alien(t, c, l3)
            drained += yield from self.drain_array(t, c, l3, c.array[t.cpu.id], False)
            if t.now < l3.next_reap:
                continue
            l3.next_reap = t.now + 4 * m.hz * self._hz_ns
            if l3.shared is not None:
                drained += yield from self.drain_array(t, c, l3, l3.shared, False)
            if l3.free_touched:
                l3.free_touched = False
                continue
            tofree = -(-l3.free_limit // (5 * c.geo.num))
            while tofree > 0 and l3.slabs_free:
                irqf = yield from l3.list_lock.lock_irqsave(t)
                lst = l3.slabs_free
                slab = lst.head if self.tun["reap_from_free_head"] else lst.tail
                if slab is None:
                    yield from l3.list_lock.unlock_irqrestore(t, irqf)
                    break
                lst.remove(slab)
                c.reaped += 1
                l3.free_objects -= c.geo.num
                t.charge("list_op")
                yield from l3.list_lock.unlock_irqrestore(t, irqf)
                self.slab_destroy(t, c, slab, "reap")
                destroyed += 1
                tofree -= 1
        yield from self.cache_chain_mutex.unlock(t)
        if m.nodes > 1:
            self.reap_node[t.cpu.id] = (self.reap_node[t.cpu.id] + 1) % m.nodes
            if self.reap_node[t.cpu.id] == node:
                self.reap_node[t.cpu.id] = (node + 1) % m.nodes
        if destroyed or drained:
            m.metrics.event("reap", cpu=t.cpu.id, slabs=destroyed, objs=drained)

    def drain_array(self, t: Thread, c: LinuxCache, l3: KmemList3, ac: ArrayCache | None,
                    force: bool) -> Gen:
        """drain_array: a touched array only loses its flag; otherwise free_block the oldest
        ceil(limit/5) entries (or half of what is left, rounded up); force frees all."""
        if ac is None or not ac.avail:
            return 0
        if ac.touched and not force:
            ac.touched = False
            return 0
        irqf = yield from l3.list_lock.lock_irqsave(t)
        tofree = 0
        victims: list[LinuxSlab] = []
        if ac.avail:
            tofree = ac.avail if force else (ac.limit + 4) // 5
            if tofree > ac.avail:
                tofree = (ac.avail + 1) // 2
            victims = self.free_block(t, c, ac.entry[:tofree])
            del ac.entry[:tofree]
        yield from l3.list_lock.unlock_irqrestore(t, irqf)
        yield from self._destroy_after_unlock(t, c, victims)
        return tofree

    def reap_alien(self, t: Thread, c: LinuxCache, l3: KmemList3) -> Gen:
        """reap_alien: drain the alien array for this CPU's reap_node rotor if its lock can be
        taken at once."""
        if not l3.alien:
            return
        target = self.reap_node[t.cpu.id]
        alien = l3.alien.get(target)
        if alien is None or not alien.avail:
            return
        assert alien.lock is not None
        was_off = t.local_irq_save()
        ok = yield from alien.lock.trylock(t)
        if ok:
            yield from self.drain_alien_cache(t, c, alien, target)
            yield from alien.lock.unlock(t)
        yield from t.local_irq_restore(was_off)

    # --- shrink / destroy ---------------------------------------------------------------------
    def reap(self, t: Thread, c: LinuxCache) -> Gen:
        """kmem_cache_shrink: drain_cpu_caches (every CPU's array through an IPI, then alien
        and shared arrays forced), then destroy every free slab of every node."""
        yield from self.cache_chain_mutex.lock(t)
        yield from self.drain_cpu_caches(t, c)
        slabs = 0
        for l3 in c.nodelists:
            while l3.slabs_free:
                irqf = yield from l3.list_lock.lock_irqsave(t)
                slab = l3.slabs_free.tail
                if slab is None:
                    yield from l3.list_lock.unlock_irqrestore(t, irqf)
                    break
                l3.slabs_free.remove(slab)
                l3.free_objects -= c.geo.num
                yield from l3.list_lock.unlock_irqrestore(t, irqf)
                self.slab_destroy(t, c, slab, "shrink")
                slabs += 1
        yield from self.cache_chain_mutex.unlock(t)
        self.machine.metrics.event("reap", cache=c.name, cpu=t.cpu.id, slabs=slabs)

    def drain_cpu_caches(self, t: Thread, c: LinuxCache) -> Gen:
        """drain_cpu_caches: do_drain on every CPU (its whole array to free_block under its
        node's list_lock, in interrupt context), then aliens and shared arrays, forced."""
        m = self.machine
        pending = {cpu.id for cpu in m.cpus}
        done = m.env.event()

        def do_drain(h: Thread) -> Gen:
            ac = c.array[h.cpu.id]
            l3 = c.nodelists[h.cpu.node]
            yield from l3.list_lock.lock(h)
            victims = self.free_block(h, c, list(ac.entry))
            ac.entry.clear()
            yield from l3.list_lock.unlock(h)
            yield from self._destroy_after_unlock(h, c, victims)
            pending.discard(h.cpu.id)
            if not pending and not done.triggered:
                done.succeed()

        for cpu in m.cpus:
            m.raise_irq(cpu.id, do_drain, "IPI:do_drain")
        yield from t.sync()
        if pending:
            yield from t.block(done, ("on_each_cpu", "do_drain"), switch_cost=False)
        for l3 in c.nodelists:
            for node, alien in l3.alien.items():
                assert alien.lock is not None
                irqf = yield from alien.lock.lock_irqsave(t)
                yield from self.drain_alien_cache(t, c, alien, node)
                yield from alien.lock.unlock_irqrestore(t, irqf)
        for l3 in c.nodelists:
            yield from self.drain_array(t, c, l3, l3.shared, True)

    def destroy(self, t: Thread, c: LinuxCache) -> Gen:
        """kmem_cache_destroy: shrink; objects still in use make it fail (the cache stays)."""
        yield from self.reap(t, c)
        if c.inuse:
            self.machine.metrics.event("kmem_cache_destroy_not_empty", cache=c.name)
            raise InvariantError(f"{c.name}: destroy with {c.inuse} objects in use")
        for w in self.reapers if len(self.caches) == 1 else ():
            w.cancel()
        self.caches.remove(c)

    # --- statistics -------------------------------------------------------------------------
    def possible_cpus(self) -> int:
        return self.tun["nr_cpu_ids"] or self.machine.ncpus

    def metadata_bytes(self, c: LinuxCache) -> int:
        """Array caches and off-slab descriptors. 2.6.17: one kmalloc'ed array per online CPU
        (rounded to its general cache); patch 004: 16 + pointer x limit for every possible
        CPU. Shared and alien arrays are kmalloc'ed per node in both."""
        ptr = self.tun["sizeof_pointer"]
        percpu = self.tun["percpu_cpu_cache"]
        ncpu = self.possible_cpus() if percpu else self.machine.ncpus
        total = ncpu * cpu_array_bytes(c.limit, percpu, ptr)
        for l3 in c.nodelists:
            if l3.shared is not None:
                total += kmalloc_size(ARRAY_HEADER_2617 + ptr * l3.shared.limit)
            for alien in l3.alien.values():
                total += kmalloc_size(ARRAY_HEADER_2617 + ptr * alien.limit)
        if c.geo.off_slab:
            slabs = sum(len(l3.slabs_full) + len(l3.slabs_partial) + len(l3.slabs_free)
                        for l3 in c.nodelists)
            total += slabs * kmalloc_size(align_up(c.geo.slab_size, 8))
        return total

    def stats(self, c: LinuxCache) -> CacheStats:
        full = sum(len(l3.slabs_full) for l3 in c.nodelists)
        partial = sum(len(l3.slabs_partial) for l3 in c.nodelists)
        empty = sum(len(l3.slabs_free) for l3 in c.nodelists)
        slabs = full + partial + empty
        cached = sum(ac.avail for ac in c.array) + sum(
            (l3.shared.avail if l3.shared is not None else 0)
            + sum(a.avail for a in l3.alien.values()) for l3 in c.nodelists)
        page = self.machine.memory.page_size
        return CacheStats(
            name=c.name, obj_size=c.geo.buffer_size, objs_inuse=c.inuse, objs_cached=cached,
            objs_free=sum(l3.free_objects for l3 in c.nodelists), slabs=slabs,
            slabs_partial=partial, slabs_empty=empty, bytes_slab=slabs * (page << c.geo.gfporder),
            bytes_meta=self.metadata_bytes(c), objs_per_slab=c.geo.num,
            pages_per_slab=c.geo.pages, limit=c.limit, batchcount=c.batchcount, shared=c.shared,
            shared_avail=sum(l3.shared.avail for l3 in c.nodelists if l3.shared is not None),
            extra={"allocs": c.allocs, "frees": c.frees, "grown": c.grown, "reaped": c.reaped,
                   "alloc_fail": c.alloc_fail, "allochit": c.allochit,
                   "allocmiss": c.allocmiss, "freehit": c.freehit, "freemiss": c.freemiss,
                   "listallocs": c.num_allocations, "maxobjs": c.high_mark,
                   "nodeallocs": c.node_allocs, "remotefrees": c.node_frees,
                   "alienoverflow": c.node_overflow, "free_limit_destroyed": c.destroyed,
                   "array_avail": sum(ac.avail for ac in c.array),
                   "shared_avail": sum(l3.shared.avail for l3 in c.nodelists
                                       if l3.shared is not None),
                   "alien_avail": sum(a.avail for l3 in c.nodelists
                                      for a in l3.alien.values())})

    def check_invariants(self) -> None:
        """Checklist item 13 and s_show's checks: list membership by inuse, num_objs -
        active_objs = sum(free_objects), num_active = objects outside slabs = in use + cached,
        high_mark >= num_active, CPU arrays hold only their node's objects, owner map =
        slab capacity, allocs - frees = in use."""
        for c in self.caches:
            num = c.geo.num
            slabs = 0
            outside = 0
            for l3 in c.nodelists:
                free_objs = 0
                for s in l3.slabs_full:
                    if s.inuse != num or s.free:
                        raise InvariantError(f"{c.name}: slabs_full accounting error")
                for s in l3.slabs_partial:
                    if not 0 < s.inuse < num:
                        raise InvariantError(f"{c.name}: slabs_partial inuse accounting error")
                    free_objs += num - s.inuse
                for s in l3.slabs_free:
                    if s.inuse:
                        raise InvariantError(f"{c.name}: slabs_free/inuse accounting error")
                    free_objs += num
                for lst in (l3.slabs_full, l3.slabs_partial, l3.slabs_free):
                    for s in lst:
                        if s.inuse + len(s.free) != num or s.nodeid != l3.node:
                            raise InvariantError(f"{c.name}: slab free chain broken")
                        outside += s.inuse
                    slabs += len(lst)
                if free_objs != l3.free_objects:
                    raise InvariantError(f"{c.name}: free_objects accounting error on node "
                                         f"{l3.node}: lists {free_objs}, counter "
                                         f"{l3.free_objects}")
            st = self.stats(c)
            if outside != c.num_active or c.num_active != c.inuse + st.objs_cached:
                raise InvariantError(f"{c.name}: num_active {c.num_active}, outside slabs "
                                     f"{outside}, in use + cached {c.inuse + st.objs_cached}")
            if c.high_mark < c.num_active:
                raise InvariantError(f"{c.name}: high_mark below num_active")
            if len(c.owner) != slabs * num:
                raise InvariantError(f"{c.name}: owner map {len(c.owner)} != {slabs * num}")
            for cpu in self.machine.cpus:
                ac = c.array[cpu.id]
                if ac.avail > ac.limit or any(c.owner[o].nodeid != cpu.node for o in ac.entry):
                    raise InvariantError(f"{c.name}: CPU {cpu.id} array over limit or holding "
                                         "another node's objects")
            if c.allocs - c.frees != c.inuse:
                raise InvariantError(f"{c.name}: allocs - frees != in use")

    def reports(self) -> dict[str, str]:
        return {"slabinfo.txt": format_slabinfo_stats(self, list(reversed(self.caches)))}


def slabinfo_line(p: LinuxSlabPolicy, c: LinuxCache) -> str:
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


def format_slabinfo_stats(p: LinuxSlabPolicy, caches: list[LinuxCache]) -> str:
    """/proc/slabinfo 2.1 (statistics), caches in cache_chain order (newest first)."""
    lines = ["slabinfo - version: 2.1 (statistics)",
             "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab>"
             " : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs>"
             " <num_slabs> <sharedavail> : globalstat <listallocs> <maxobjs> <grown> <reaped>"
             " <error> <maxfreeable> <nodeallocs> <remotefrees> <alienoverflow>"
             " : cpustat <allochit> <allocmiss> <freehit> <freemiss>"]
    lines += [slabinfo_line(p, c) for c in caches]
    return "\n".join(lines) + "\n"
