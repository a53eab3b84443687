"""Linux SLAB free (seed 003 mm/slab.c): __cache_free (array push), cache_flusharray (shared
array, else free_block), free_block with the free_limit rule, slab_destroy."""

from __future__ import annotations

from policies.base import Gen
from policies.linux_slab.structs import ArrayCache, LinuxCache, LinuxSlab
from simcore.cpu import Thread


class SlabFreePaths:
    """Free paths of LinuxSlabPolicy."""

    # --- free -----------------------------------------------------------------------------------
    def free(self, t: Thread, c: LinuxCache, obj: int) -> Gen:
        """__cache_free (IRQs saved): a remote-node object goes to cache_free_alien; else push
        on this CPU's array (freehit) or cache_flusharray first (freemiss). The latency is
        tallied by value into free.hit / free.flush (`LogHistogram.tally`)."""
        env = t.env
        start = env._now + t.pending
        ns = self._call_ns
        t.pending += ns  # t.charge("call"), inlined
        if not t._batched and ns:
            t._steps.append(ns)
        was_off = t.local_irq_save()
        tally = self._t_free_hit
        cpu = t.cpu
        if self._numa and c.owner[obj].nodeid != cpu.node:
            yield from self.cache_free_alien(t, c, obj, c.owner[obj].nodeid)
            tally = self._t_flush
        else:
            ac = c.array[cpu.id]
            entry = ac.entry
            if len(entry) < ac.limit:
                c.freehit += 1
            else:
                c.freemiss += 1
                yield from self.cache_flusharray(t, c, ac)
                tally = self._t_flush
            entry.append(obj)
            c.inuse -= 1  # landed(c), inlined
            c.frees += 1
            ns = self._magazine_push_ns
            t.pending += ns  # t.charge("magazine_push"), inlined
            if not t._batched and ns:
                t._steps.append(ns)
        if not was_off:
            # local_irq_restore as a plain call: IRQs back on (they were on before the save);
            # an interrupt that arrived meanwhile is taken by synchronising, as
            # Thread.local_irq_enable does
            t.local_irq_enable_fast()
            irqs = t.cpu.irqs
            if irqs and irqs[0].at <= env._now + t.pending:
                yield from t.sync()
        tally[env._now + t.pending - start] += 1

    def landed(self, c: LinuxCache) -> None:
        """The freed object is in an array or its slab: the caller no longer holds it (model
        bookkeeping, counted where it lands so that no instant sees it in both or neither)."""
        c.inuse -= 1
        c.frees += 1

    def free_fast(self, t: Thread, c: LinuxCache, obj: int) -> bool:
        """The local array push of __cache_free as a plain call (IRQs on, room in the array,
        the object from this node, no interrupt due before IRQs are restored). One charge;
        the hit and its IRQ-off section have constant lengths, so the array counts it
        (`ArrayCache.free_hits`) and fold_hits adds it to freehit, the cache's frees and
        in-use count, the IRQ-off statistics and free.hit."""
        cpu = t.cpu
        ac = c.array[cpu.id]
        if len(ac.entry) >= ac.limit or t.irqs_off:
            return False
        if self._numa and c.owner[obj].nodeid != cpu.node:
            return False
        if cpu.irqs and cpu.irqs[0].at <= t.env._now + t.pending + self._free_hit_ns:
            return False
        ac.entry.append(obj)
        t.pending += self._free_hit_ns
        if not t._batched:
            t._steps.append(self._free_hit_ns)
        if t._tracer is None:
            ac.free_hits += 1
        else:
            c.freehit += 1
            self.landed(c)
            t.irq_off_section(t.now - self._free_hit_ns + self._hit_pre_ns, self._free_off_ns)
            self._h_free_hit.record(self._free_hit_ns)
        return True

    def cache_flusharray(self, t: Thread, c: LinuxCache, ac: ArrayCache) -> Gen:
        """cache_flusharray: the oldest batchcount entries go to the shared array if it has
        room (as many as fit), else to free_block; the rest move down."""
        n = ac.batchcount
        node = t.cpu.node
        l3 = c.nodelists[node]
        yield from l3.list_lock.lock(t)
        shared = l3.shared
        entry = ac.entry
        victims = None
        if shared is not None and shared.limit > len(shared.entry):
            room = shared.limit - len(shared.entry)
            if n > room:
                n = room
            shared.entry += entry[:n]
            t.charge("object_move", n)
        else:
            victims = self.free_block(t, c, entry[:n], node)
        nfree = l3.slabs_free.count
        if self._stats:
            t.charge("list_op", nfree)
        if nfree > c.max_freeable:
            c.max_freeable = nfree
        yield from l3.list_lock.unlock(t)
        del entry[:n]
        if victims:
            yield from self._destroy_after_unlock(t, c, victims)

    def free_block(self, t: Thread, c: LinuxCache, objs: list[int],
                   node: int) -> list[LinuxSlab]:
        """free_block (node's list_lock held; every object is from `node`): each object back
        to its slab; a slab that empties is destroyed when the node holds more than
        free_limit free objects, else put at the head of slabs_free; a slab still in use goes
        to the tail of slabs_partial. Returns the slabs to destroy after the lock is dropped
        (empty with destroy_under_lock).

        The costs (slab_obj_op and list_op per object) are charged once, before a slab is
        destroyed under the lock and at the end; num_active drops by the batch at once and
        free_objects is counted in a local, stored before a destroy and at the end (only
        slab_destroy runs in between, and it reads neither). A slab already at the tail of
        slabs_partial is not unlinked and relinked there (the same list either way)."""
        l3 = c.nodelists[node]
        owner = c.owner
        partial = l3.slabs_partial
        slabs_free = l3.slabs_free
        free_limit = l3.free_limit
        free_objects = l3.free_objects
        per_obj = self._free_block_obj_ns
        c.num_active -= len(objs)
        later: list[LinuxSlab] = []
        charged = 0
        for i, obj in enumerate(objs):
            slab = owner[obj]
            slab.free.append(obj)
            inuse = slab.inuse - 1
            slab.inuse = inuse
            free_objects += 1
            if inuse:
                if slab is not partial.tail:
                    partial.move_tail(slab)
            elif free_objects > free_limit:
                slab.on.remove(slab)
                free_objects -= c.geo.num
                if self._destroy_under_lock:
                    l3.free_objects = free_objects
                    t.charge_ns((i + 1 - charged) * per_obj)
                    charged = i + 1
                    self.slab_destroy(t, c, slab, "free_limit")
                else:
                    later.append(slab)
            else:
                slabs_free.move(slab)
        l3.free_objects = free_objects
        ns = (len(objs) - charged) * per_obj
        t.pending += ns  # t.charge_ns, inlined
        if not t._batched and ns:
            t._steps.append(ns)
        return later

    def _destroy_after_unlock(self, t: Thread, c: LinuxCache, slabs: list[LinuxSlab]) -> Gen:
        """3.x slabs_destroy: destroy outside list_lock."""
        for slab in slabs:
            self.slab_destroy(t, c, slab, "free_limit")
        if slabs:
            yield from t.sync()

    def slab_destroy(self, t: Thread, c: LinuxCache, slab: LinuxSlab, why: str) -> None:
        """slab_destroy (seed 003 1760): destructors, then kmem_freepages and the off-slab
        descriptor back to its general cache, or for SLAB_DESTROY_BY_RCU both after a grace
        period (call_rcu). Charged in the caller's context (under list_lock in 2.6.17's
        free_block)."""
        geo = c.geo
        if c.spec.dtor_cost:
            t.charge_ns(c.spec.dtor_cost * geo.num)
        for obj in slab.free:
            del c.owner[obj]
        if c.rcu:
            self.call_rcu_free(t, c, slab)
        else:
            self.machine.memory.release_pages(t, slab.base, geo.gfporder)
            if geo.off_slab:
                t.charge("kmalloc")
        if why == "free_limit":
            c.destroyed += 1
        self.machine.metrics.event("slab_destroy", cache=c.name, cpu=t.cpu.id, why=why)

