"""Linux SLAB reaping and shrinking (seed 003 mm/slab.c): the per-CPU cache_reap timer,
drain_array, reap_alien, and kmem_cache_shrink with drain_cpu_caches."""

from __future__ import annotations

from collections.abc import Callable

from policies.base import Gen
from policies.linux_slab.structs import ArrayCache, KmemList3, LinuxCache, LinuxSlab
from simcore.cpu import Thread


class SlabReaper:
    """cache_reap and kmem_cache_shrink of LinuxSlabPolicy."""

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
        for c in list(self.cache_chain):
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
            self.next_reap_node(t)
        if destroyed or drained:
            m.metrics.event("reap", cpu=t.cpu.id, slabs=destroyed, objs=drained)

    def next_reap_node(self, t: Thread) -> None:
        """next_reap_node (seed 003 846-860): step this CPU's rotor to the next online node,
        wrapping to the first; the local node is one of the stops (its alien slot is empty, so
        that reap_alien pass does nothing). drain_node_pages, which the seed calls for remote
        nodes, has no counterpart in the model."""
        cpu = t.cpu.id
        self.reap_node[cpu] = (self.reap_node[cpu] + 1) % self.machine.nodes

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
            victims = self.free_block(t, c, ac.entry[:tofree], l3.node)
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

    def on_each_cpu(self, t: Thread, func: Callable[[Thread], Gen], name: str) -> Gen:
        """on_each_cpu(func, wait=1): an IPI runs `func` on every online CPU in interrupt
        context; the caller sleeps until all have run (the kernel spins; see the module
        docstring of policy.py)."""
        m = self.machine
        pending = {cpu.id for cpu in m.cpus if self.cpu_is_online[cpu.id]}
        done = m.env.event()

        def ipi(h: Thread) -> Gen:
            yield from func(h)
            pending.discard(h.cpu.id)
            if not pending and not done.triggered:
                done.succeed()

        for cpu in sorted(pending):
            m.raise_irq(cpu, ipi, f"IPI:{name}")
        yield from t.sync()
        if pending:
            yield from t.block(done, ("on_each_cpu", name), switch_cost=False)

    # --- shrink / destroy ---------------------------------------------------------------------
    def reap(self, t: Thread, c: LinuxCache) -> Gen:
        """kmem_cache_shrink (seed 003 2306): __cache_shrink, without cache_chain_mutex."""
        yield from self.cache_shrink(t, c)

    def cache_shrink(self, t: Thread, c: LinuxCache) -> Gen:
        """__cache_shrink (seed 003 2280): drain_cpu_caches (every CPU's array through an
        IPI, then alien and shared arrays forced), then __node_shrink on every node: free slabs
        from the tail of slabs_free, list_lock dropped around each slab_destroy. Returns True
        when a node still has full or partial slabs (objects in use)."""
        yield from self.drain_cpu_caches(t, c)
        slabs = 0
        for l3 in c.nodelists:
            slabs += yield from self.node_shrink(t, c, l3)
        self.machine.metrics.event("reap", cache=c.name, cpu=t.cpu.id, slabs=slabs)
        return any(l3.slabs_full or l3.slabs_partial for l3 in c.nodelists)

    def node_shrink(self, t: Thread, c: LinuxCache, l3: KmemList3) -> Gen:
        """__node_shrink (seed 003 2252): every free slab from the tail of slabs_free, the
        list_lock dropped around each slab_destroy. Returns the slabs destroyed."""
        slabs = 0
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
        return slabs

    def drain_cpu_caches(self, t: Thread, c: LinuxCache) -> Gen:
        """drain_cpu_caches: do_drain on every CPU (its whole array to free_block under its
        node's list_lock, in interrupt context), then aliens and shared arrays, forced."""
        def do_drain(h: Thread) -> Gen:
            ac = c.array[h.cpu.id]
            l3 = c.nodelists[h.cpu.node]
            yield from l3.list_lock.lock(h)
            victims = self.free_block(h, c, list(ac.entry), h.cpu.node)
            ac.entry.clear()
            yield from l3.list_lock.unlock(h)
            yield from self._destroy_after_unlock(h, c, victims)

        yield from self.on_each_cpu(t, do_drain, "do_drain")
        for l3 in c.nodelists:
            for node, alien in l3.alien.items():
                assert alien.lock is not None
                irqf = yield from alien.lock.lock_irqsave(t)
                yield from self.drain_alien_cache(t, c, alien, node)
                yield from alien.lock.unlock_irqrestore(t, irqf)
        for l3 in c.nodelists:
            yield from self.drain_array(t, c, l3, l3.shared, True)

