"""Linux SLAB allocation (seed 003 mm/slab.c): __cache_alloc / ____cache_alloc (array hit),
cache_alloc_refill (shared array, partial, free lists), transfer_objects, and the node-directed
__cache_alloc_node."""

from __future__ import annotations

from policies.base import Gen
from policies.linux_slab.structs import ArrayCache, LinuxCache, LinuxSlab
from simcore.cpu import Thread

BATCHREFILL_LIMIT = 16
"""First refill after an untouched interval takes at most this many objects."""


class SlabAllocPaths:
    """Allocation paths of LinuxSlabPolicy."""

    # --- allocation -------------------------------------------------------------------------
    def alloc(self, t: Thread, c: LinuxCache, flags: int) -> Gen:
        """__cache_alloc: IRQs saved; ____cache_alloc pops this CPU's array (allochit) or
        counts allocmiss and runs cache_alloc_refill. The latency is tallied by value into
        alloc.hit / alloc.refill / alloc.grow (`LogHistogram.tally`, folded on any read)."""
        env = t.env
        start = env._now + t.pending
        ns = self._call_ns
        t.pending += ns  # t.charge("call"), inlined
        if not t._batched and ns:
            t._steps.append(ns)
        was_off = t.local_irq_save()
        if self._spread and c.mem_spread and not t.in_irq:
            obj = yield from self.alternate_node_alloc(t, c, flags)
            if obj is not None:
                yield from t.local_irq_restore(was_off)
                self._t_refill[t.now - start] += 1
                return obj
        ac = c.array[t.cpu.id]
        entry = ac.entry
        if entry:
            c.allochit += 1
            ac.touched = True
            obj = entry.pop()
            t.charge("magazine_pop")
            tally = self._t_hit
        else:
            c.allocmiss += 1
            t.slab_grew = False
            obj = yield from self.cache_alloc_refill(t, c, flags)
            tally = self._t_grow if t.slab_grew else self._t_refill
        if obj is not None:
            # the caller holds it from the pop on (the restore below may take interrupts)
            c.inuse += 1
            c.allocs += 1
        if not was_off:
            # local_irq_restore as a plain call: IRQs back on (they were on before the save);
            # an interrupt that arrived meanwhile is taken by synchronising, as
            # Thread.local_irq_enable does
            t.local_irq_enable_fast()
            irqs = t.cpu.irqs
            if irqs and irqs[0].at <= env._now + t.pending:
                yield from t.sync()
        if obj is None:
            c.alloc_fail += 1
            self.machine.metrics.event("alloc_fail", cache=c.name, cpu=t.cpu.id)
            return None
        tally[env._now + t.pending - start] += 1
        return obj

    def alloc_fast(self, t: Thread, c: LinuxCache, flags: int) -> int | None:
        """The array hit of ____cache_alloc as a plain call (IRQs on, no interrupt due before
        they are restored): local_irq_save, pop ac->entry, local_irq_restore. One charge; the
        hit and its IRQ-off section have constant lengths, so the array counts it
        (`ArrayCache.alloc_hits`) and fold_hits adds it to allochit, the cache's allocs and
        in-use count, the IRQ-off statistics and alloc.hit."""
        cpu = t.cpu
        ac = c.array[cpu.id]
        if not ac.entry or t.irqs_off or (self._spread and c.mem_spread):
            return None
        if cpu.irqs and cpu.irqs[0].at <= t.env._now + t.pending + self._alloc_hit_ns:
            return None
        ac.touched = True
        t.pending += self._alloc_hit_ns
        if not t._batched:
            t._steps.append(self._alloc_hit_ns)
        if t._tracer is None:
            ac.alloc_hits += 1
        else:
            c.allochit += 1
            c.inuse += 1
            c.allocs += 1
            t.irq_off_section(t.now - self._alloc_hit_ns + self._hit_pre_ns, self._alloc_off_ns)
            self._h_hit.record(self._alloc_hit_ns)
        return ac.entry.pop()

    def alternate_node_alloc(self, t: Thread, c: LinuxCache, flags: int) -> Gen:
        """alternate_node_alloc (seed 003 2952, IRQs off; ____cache_alloc calls it for a task
        with PF_SPREAD_SLAB): for a SLAB_MEM_SPREAD cache the node is the task's
        cpuset_mem_spread_node rotor (next online node after the last one, from 0); another
        node than this CPU's is served by __cache_alloc_node, bypassing the arrays. None:
        take the local path."""
        rotor = (self.spread_rotor.get(t, 0) + 1) % self.machine.nodes
        self.spread_rotor[t] = rotor
        if rotor == t.cpu.node:
            return None
        obj = yield from self.cache_alloc_node(t, c, flags, rotor)
        if obj is not None:
            c.spread_allocs += 1
        return obj

    def cache_alloc_refill(self, t: Thread, c: LinuxCache, flags: int) -> Gen:
        """cache_alloc_refill (IRQs off): batchcount objects (16 after an untouched interval)
        from the shared array, else from the head of slabs_partial / slabs_free under
        list_lock; with nothing found cache_grow once and retry. NULL if grow failed and the
        array is still empty.

        The kernel's per-object loop (slab_get_obj while the slab has free objects and the
        batch wants more) runs here a slab at a time: the objects it would pop come off the
        end of `slab.free` in one slice, in pop order, and the STATS counters and the costs
        (slab_obj_op per object, list_op per slab) are added once per refill and charged once
        (nothing reads the thread's clock under the lock before the unlock). The slabs the
        batch empties form a run from the head of the list they are taken from (each one's
        list_del + list_add to slabs_full makes the next one the head): the run is moved to
        slabs_full in one `SlabList.move_first` when the batch leaves that list, which leaves
        the lists as the per-slab moves leave them. Every slab on slabs_free has num free
        objects, so the run taken there is n // num slabs (as many as there are at most)
        without looking at each one's count. A slab the batch ends in keeps free objects: it
        stays at the head of slabs_partial or goes there from slabs_free (a slab already at
        that head is not unlinked and relinked there: the same list either way)."""
        while True:
            cpu = t.cpu
            ac = c.array[cpu.id]
            node = cpu.node
            l3 = c.nodelists[node]
            n = ac.batchcount
            if not ac.touched and n > BATCHREFILL_LIMIT:
                n = BATCHREFILL_LIMIT
            yield from l3.list_lock.lock(t)
            shared = l3.shared
            if shared is not None and self.transfer_objects(t, ac, shared, n):
                if self._shared_touched_on_refill:
                    shared.touched = True
            else:
                num = c.geo.num
                entry = ac.entry
                avail = len(entry)
                partial = l3.slabs_partial
                full = l3.slabs_full
                slab = partial.head
                slabs = 0
                while n > 0 and slab is not None:
                    free = slab.free
                    k = len(free)
                    if k > n:
                        break
                    entry += free[::-1]
                    free.clear()
                    slab.inuse = num
                    n -= k
                    slabs += 1
                    slab = slab.next
                if slabs:
                    full.move_first(partial, slabs)
                if n > 0 and slab is None:
                    # slabs_partial is used up: slabs_free from its head
                    l3.free_touched = True
                    lst = l3.slabs_free
                    emptied = n // num
                    if emptied > lst.count:
                        emptied = lst.count
                    slab = lst.head
                    for _ in range(emptied):
                        entry += slab.free[::-1]
                        slab.free = []  # its free chain is used up
                        slab.inuse = num
                        slab = slab.next
                    full.move_first(lst, emptied)
                    slabs += emptied
                    n -= emptied * num
                    if n > 0 and slab is not None:
                        self.slab_get_objs(slab, entry, n)
                        partial.move(slab)
                        slabs += 1
                elif n > 0:
                    self.slab_get_objs(slab, entry, n)
                    slabs += 1
                taken = len(entry) - avail
                if taken:
                    c.num_allocations += taken
                    active = c.num_active + taken
                    c.num_active = active
                    if active > c.high_mark:
                        c.high_mark = active
                    l3.free_objects -= taken
                    ns = taken * self._slab_obj_op_ns + slabs * self._list_op_ns
                    t.pending += ns  # t.charge_ns, inlined
                    if not t._batched and ns:
                        t._steps.append(ns)
            yield from l3.list_lock.unlock(t)
            entry = ac.entry
            if not entry:
                ok = yield from self.cache_grow(t, c, flags, node)
                t.slab_grew = True
                ac = c.array[t.cpu.id]
                entry = ac.entry
                if not ok and not entry:
                    return None
                if not entry:
                    continue
            ac.touched = True
            ns = self._magazine_pop_ns
            t.pending += ns  # t.charge("magazine_pop"), inlined
            if not t._batched and ns:
                t._steps.append(ns)
            return entry.pop()

    def slab_get_objs(self, slab: LinuxSlab, entry: list[int], n: int) -> None:
        """slab_get_obj `n` times on a slab that keeps free objects (list_lock held): the top
        `n` of slabp->free onto the array, in pop order; inuse += n."""
        free = slab.free
        got = free[-n:]
        del free[-n:]
        got.reverse()
        entry += got
        slab.inuse += n

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
        if not self._shared_touched_on_refill:
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
        self._h_refill.record(t.now - start)
        return obj

    def cache_alloc_node(self, t: Thread, c: LinuxCache, flags: int, nodeid: int) -> Gen:
        """__cache_alloc_node: one object from the partial (else free) head of `nodeid`; the
        caller holds it (inuse) from the moment it leaves the slab."""
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
                c.inuse += 1
                c.allocs += 1
                l3.free_objects -= 1
                (l3.slabs_full if not slab.free else l3.slabs_partial).move(slab)
                t.charge("list_op")
                yield from l3.list_lock.unlock(t)
                return obj
            yield from l3.list_lock.unlock(t)
            ok = yield from self.cache_grow(t, c, flags, nodeid)
            if not ok:
                return None

