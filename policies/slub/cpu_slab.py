"""SLUB per-CPU slabs (linux-6.8-mm-slub.c): the lockless fast paths on kmem_cache_cpu
(slab_alloc_node / __slab_alloc_node and do_slab_free: this_cpu_cmpxchg of freelist + tid),
the allocation slow path ___slab_alloc, and the flushes flush_slab / __flush_cpu_slab /
flush_cpu_slab / flush_all.

The fast paths disable nothing: no IRQ-off section, no lock, no SimPy event; their cost is
charged to the CPU's local clock and their latency, a constant of the path, is counted and put
into the `alloc.hit` / `free.hit` histograms in bulk (`flush_hit_counts`). Interrupts reach a
thread only at its synchronisation points, so the tid can never change between the fast path's
read and its cmpxchg: cmpxchg_double_cpu_fail stays 0 (a deviation, docs/policies/slub.md).
The slow path runs with preemption disabled (slub_get_cpu_ptr) except around new_slab, and
takes the cpu_slab local lock as local_lock_irqsave, re-checking c->slab each time as the seed
does because an interrupt handler may have changed it in between.
"""

from __future__ import annotations

from policies.base import Gen
from policies.slub.structs import (
    ALLOC_FASTPATH,
    ALLOC_NODE_MISMATCH,
    ALLOC_PCS,
    ALLOC_REFILL,
    ALLOC_SLAB,
    ALLOC_SLOWPATH,
    CPU_PARTIAL_ALLOC,
    CPUSLAB_FLUSH,
    DEACTIVATE_BYPASS,
    FREE_FASTPATH,
    FREE_PCS,
    NUMA_NO_NODE,
    KmemCacheCpu,
    Slab,
    SlubCache,
)
from simcore.cpu import Thread


class SlubCpuSlab:
    """kmem_cache_cpu paths of SlubPolicy."""

    # --- allocation ---------------------------------------------------------------------------
    def alloc_fast(self, t: Thread, s: SlubCache, flags: int) -> int | None:
        """The purely local allocation as a plain call: a pop from the main sheaf (6.18,
        local_trylock free and the sheaf not empty) or, without sheaves, the lockless pop from
        the cpu freelist. None, with nothing changed, when the slow path must run."""
        pcs_all = s.cpu_sheaves
        if pcs_all is not None:
            pcs = pcs_all[t.cpu.id]
            if pcs.locked:
                return None
            main = pcs.main.objects
            if not main:
                return None
            t.charge("call")
            obj = main.pop()
            t.charge("magazine_pop")
            s.cpu_slab[t.cpu.id].stat[ALLOC_PCS] += 1
        else:
            c = s.cpu_slab[t.cpu.id]
            if not c.freelist or c.slab is None:
                return None
            t.charge("call")
            obj = c.freelist.pop()
            c.tid += 1
            t.charge("magazine_pop")
            c.stat[ALLOC_FASTPATH] += 1
        self._alloc_hits += 1
        s.inuse += 1
        s.allocs += 1
        return obj

    def alloc(self, t: Thread, s: SlubCache, flags: int) -> Gen:
        """kmem_cache_alloc -> slab_alloc_node(NUMA_NO_NODE)."""
        obj = self.alloc_fast(t, s, flags)
        if obj is not None:
            return obj
        return (yield from self.slab_alloc_node(t, s, flags, NUMA_NO_NODE))

    def alloc_node(self, t: Thread, s: SlubCache, flags: int, node: int) -> Gen:
        """kmem_cache_alloc_node: a node-directed request bypasses the sheaves and allocates
        only from slabs of `node`."""
        return (yield from self.slab_alloc_node(t, s, flags, node))

    def slab_alloc_node(self, t: Thread, s: SlubCache, flags: int, node: int) -> Gen:
        """slab_alloc_node: the sheaves first (6.18, NUMA_NO_NODE requests only:
        alloc_from_pcs), then __slab_alloc_node: the lockless cpu freelist, else __slab_alloc
        -> ___slab_alloc with preemption disabled."""
        start = t.now
        t.charge("call")
        t.slab_grew = False
        s.busy += 1
        obj = None
        if s.cpu_sheaves is not None and node == NUMA_NO_NODE:
            obj = yield from self.alloc_from_pcs(t, s, flags)
        if obj is None:
            c = s.cpu_slab[t.cpu.id]
            slab = c.slab
            if c.freelist and slab is not None and (node == NUMA_NO_NODE or slab.node == node):
                obj = c.freelist.pop()
                c.tid += 1
                t.charge("magazine_pop")
                c.stat[ALLOC_FASTPATH] += 1
            else:
                t.preempt_count += 1
                obj = yield from self.slab_alloc_slow(t, s, flags, node)
                t.preempt_count -= 1
                if obj is not None:
                    s.transit -= 1
        s.busy -= 1
        if obj is None:
            s.alloc_fail += 1
            self.machine.metrics.event("alloc_fail", cache=s.name, cpu=t.cpu.id)
            return None
        s.inuse += 1
        s.allocs += 1
        (self._h_grow if t.slab_grew else self._h_refill).record(t.now - start)
        return obj

    def slab_alloc_slow(self, t: Thread, s: SlubCache, flags: int, node: int) -> Gen:
        """___slab_alloc (preemption disabled): refill the cpu freelist from the cpu slab's own
        freelist (get_freelist, ALLOC_REFILL); else deactivate it and take the head of the cpu
        partial list (CPU_PARTIAL_ALLOC), else get_partial from the node lists, else new_slab
        (ALLOC_SLAB); install the slab as cpu slab (retry_load_slab flushes one that appeared
        meanwhile) and return the first object of its freelist."""
        self.stat(t, s, ALLOC_SLOWPATH)
        while True:  # reread_slab
            c = s.cpu_slab[t.cpu.id]
            slab = c.slab
            if slab is not None:
                if node != NUMA_NO_NODE and slab.node != node:
                    self.stat(t, s, ALLOC_NODE_MISMATCH)
                    was_off = t.local_irq_save()
                    if slab is not c.slab:
                        yield from t.local_irq_restore(was_off)
                        continue
                    freelist = c.freelist
                    c.slab, c.freelist = None, []
                    c.tid += 1
                    s.transit += len(freelist)
                    yield from t.local_irq_restore(was_off)
                    yield from self.deactivate_slab(t, s, slab, freelist)
                else:
                    was_off = t.local_irq_save()
                    if slab is not c.slab:
                        yield from t.local_irq_restore(was_off)
                        continue
                    if not c.freelist:
                        freelist = self.get_freelist(t, s, slab)
                        if not freelist:
                            c.slab = None
                            c.tid += 1
                            yield from t.local_irq_restore(was_off)
                            self.stat(t, s, DEACTIVATE_BYPASS)
                            slab = None
                        else:
                            self.stat(t, s, ALLOC_REFILL)
                            c.freelist = freelist
                    if slab is not None:
                        return (yield from self._load_freelist(t, s, c, was_off))
            # new_slab: the cpu partial list
            got = yield from self._take_cpu_partial(t, s, node)
            if got == "reread":
                continue
            if got is None:
                got = yield from self.get_partial(t, s, node)
            if got is not None:
                freelist = self.freeze_slab(t, s, got)
                s.transit += len(freelist)
                slab = got
            else:
                t.preempt_count -= 1
                slab = yield from self.new_slab(t, s, flags,
                                                t.cpu.node if node == NUMA_NO_NODE else node)
                t.preempt_count += 1
                t.slab_grew = True
                if slab is None:
                    self.machine.metrics.event("slab_out_of_memory", cache=s.name,
                                               cpu=t.cpu.id)
                    return None
                self.stat(t, s, ALLOC_SLAB)
                freelist = slab.freelist
                slab.freelist = []
                slab.inuse = slab.objects
                slab.frozen = True
                s.transit += len(freelist)
                self.inc_slabs_node(s, slab)
            return (yield from self._retry_load_slab(t, s, slab, freelist))

    def _take_cpu_partial(self, t: Thread, s: SlubCache, node: int) -> Gen:
        """___slab_alloc's new_slab label: pop cpu partial slabs under the local lock until
        one matches the node (others go back through __put_partials). "reread" when a cpu
        slab appeared meanwhile, None when the list is (or became) empty."""
        while True:
            c = s.cpu_slab[t.cpu.id]
            if not c.partial:
                return None
            was_off = t.local_irq_save()
            if c.slab is not None:
                yield from t.local_irq_restore(was_off)
                return "reread"
            if not c.partial:
                yield from t.local_irq_restore(was_off)
                return None
            slab = c.partial.pop()
            t.charge("list_op")
            yield from t.local_irq_restore(was_off)
            self.stat(t, s, CPU_PARTIAL_ALLOC)
            if node != NUMA_NO_NODE and slab.node != node:
                yield from self.put_partials_list(t, s, [slab])
                continue
            return slab

    def _retry_load_slab(self, t: Thread, s: SlubCache, slab: Slab, freelist: list[int]) -> Gen:
        """retry_load_slab: under the local lock, flush a cpu slab that appeared while we were
        away (CPUSLAB_FLUSH), then install `slab` and load its freelist."""
        while True:
            c = s.cpu_slab[t.cpu.id]
            was_off = t.local_irq_save()
            if c.slab is None:
                break
            flush_freelist, flush_slab = c.freelist, c.slab
            c.slab, c.freelist = None, []
            c.tid += 1
            s.transit += len(flush_freelist)
            yield from t.local_irq_restore(was_off)
            yield from self.deactivate_slab(t, s, flush_slab, flush_freelist)
            self.stat(t, s, CPUSLAB_FLUSH)
        c.slab = slab
        c.freelist = freelist
        s.transit -= len(freelist)
        return (yield from self._load_freelist(t, s, c, was_off))

    def _load_freelist(self, t: Thread, s: SlubCache, c: KmemCacheCpu, was_off: bool) -> Gen:
        """load_freelist (local lock held): the first object is returned (in transit to the
        caller), the rest becomes the lockless freelist; tid advances."""
        obj = c.freelist.pop()
        s.transit += 1
        c.tid += 1
        t.charge("magazine_pop")
        yield from t.local_irq_restore(was_off)
        return obj

    # --- free -----------------------------------------------------------------------------------
    def free_fast(self, t: Thread, s: SlubCache, obj: int) -> bool:
        """The purely local free as a plain call: a push on the main sheaf (not full) or,
        without sheaves, the lockless push on the cpu freelist when the object belongs to the
        cpu slab. False, with nothing changed, otherwise."""
        pcs_all = s.cpu_sheaves
        cpu = t.cpu.id
        if pcs_all is not None:
            pcs = pcs_all[cpu]
            main = pcs.main.objects
            if pcs.locked or len(main) >= s.sheaf_capacity:
                return False
            t.charge("call")
            main.append(obj)
            t.charge("magazine_push")
            s.cpu_slab[cpu].stat[FREE_PCS] += 1
        else:
            c = s.cpu_slab[cpu]
            if s.owner[obj] is not c.slab:
                return False
            t.charge("call")
            c.freelist.append(obj)
            c.tid += 1
            t.charge("magazine_push")
            c.stat[FREE_FASTPATH] += 1
        self._free_hits += 1
        s.inuse -= 1
        s.frees += 1
        return True

    def free(self, t: Thread, s: SlubCache, obj: int) -> Gen:
        """kmem_cache_free -> slab_free: the sheaves first (free_to_pcs), else do_slab_free."""
        if self.free_fast(t, s, obj):
            return
        start = t.now
        t.charge("call")
        slab = s.owner[obj]
        s.inuse -= 1
        s.frees += 1
        s.transit += 1
        s.busy += 1
        done = False
        if s.cpu_sheaves is not None:
            done = yield from self.free_to_pcs(t, s, obj)
        if not done:
            yield from self.do_slab_free(t, s, slab, [obj])
        s.busy -= 1
        self._h_free_slow.record(t.now - start)

    def do_slab_free(self, t: Thread, s: SlubCache, slab: Slab, objs: list[int]) -> Gen:
        """do_slab_free: objects (in transit) of this CPU's cpu slab go onto the lockless
        freelist (FREE_FASTPATH, per object); any other slab takes __slab_free."""
        c = s.cpu_slab[t.cpu.id]
        if slab is not c.slab:
            yield from self.slab_free_slow(t, s, slab, objs)
            return
        c.freelist.extend(objs)
        s.transit -= len(objs)
        c.tid += 1
        t.charge("magazine_push")
        c.stat[FREE_FASTPATH] += len(objs)

    # --- flushing -----------------------------------------------------------------------------
    def flush_this_cpu_slab(self, t: Thread, s: SlubCache) -> Gen:
        """flush_cpu_slab's SLUB part on this CPU: flush_slab (take the cpu slab under the
        local lock, deactivate_slab, CPUSLAB_FLUSH), then put_partials (the whole cpu
        partial list to __put_partials)."""
        c = s.cpu_slab[t.cpu.id]
        if c.slab is not None:
            was_off = t.local_irq_save()
            slab, freelist = c.slab, c.freelist
            c.slab, c.freelist = None, []
            c.tid += 1
            s.transit += len(freelist)
            yield from t.local_irq_restore(was_off)
            if slab is not None:
                yield from self.deactivate_slab(t, s, slab, freelist)
                self.stat(t, s, CPUSLAB_FLUSH)
        was_off = t.local_irq_save()
        c = s.cpu_slab[t.cpu.id]
        partial, c.partial = c.partial, []
        yield from t.local_irq_restore(was_off)
        if partial:
            yield from self.put_partials_list(t, s, partial)

    def has_cpu_slab(self, s: SlubCache, cpu: int) -> bool:
        """has_cpu_slab (or, 6.18, has_pcs_used): anything for flush_cpu_slab to do."""
        c = s.cpu_slab[cpu]
        if c.slab is not None or c.partial:
            return True
        if s.cpu_sheaves is not None:
            pcs = s.cpu_sheaves[cpu]
            return pcs.spare is not None or bool(pcs.main.objects)
        return False

    def flush_all(self, t: Thread, s: SlubCache) -> Gen:
        """flush_all -> flush_all_cpus_locked: under flush_lock, queue flush_cpu_slab on the
        flushwq of every online CPU that has a cpu slab, cpu partial slabs or used sheaves,
        then wait for each (flush_work)."""
        m = self.machine
        yield from self.flush_lock.lock(t)
        todo = [cpu.id for cpu in m.cpus if self.has_cpu_slab(s, cpu.id)]
        pending = set(todo)
        done = m.env.event()

        def flush_cpu_slab(w: Thread, cpu: int) -> Gen:
            s.busy += 1
            if s.cpu_sheaves is not None:
                yield from self.pcs_flush_all(w, s)
            yield from self.flush_this_cpu_slab(w, s)
            s.busy -= 1
            pending.discard(cpu)
            if not pending and not done.triggered:
                done.succeed()

        for cpu in todo:
            yield from self.flushwq[cpu].dispatch(t, flush_cpu_slab, cpu)
        if pending:
            yield from t.block(done, ("flush_work", s.name))
        yield from self.flush_lock.unlock(t)
