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
        on this CPU's array (freehit) or cache_flusharray first (freemiss)."""
        start = t.env._now + t.pending
        t.charge("call")
        was_off = t.local_irq_save()
        hist = self._h_free_hit
        cpu = t.cpu
        if self._numa and c.owner[obj].nodeid != cpu.node:
            yield from self.cache_free_alien(t, c, obj, c.owner[obj].nodeid)
            hist = self._h_flush
        else:
            ac = c.array[cpu.id]
            if len(ac.entry) < ac.limit:
                c.freehit += 1
            else:
                c.freemiss += 1
                yield from self.cache_flusharray(t, c, ac)
                hist = self._h_flush
            ac.entry.append(obj)
            self.landed(c)
            t.charge("magazine_push")
        if self.irq_restore_due(t, was_off):
            yield from t.sync()
        hist.record(t.env._now + t.pending - start)

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
        nfree = l3.slabs_free.count
        if self._stats:
            t.charge("list_op", nfree)
        if nfree > c.max_freeable:
            c.max_freeable = nfree
        yield from l3.list_lock.unlock(t)
        del ac.entry[:n]
        if victims:
            yield from self._destroy_after_unlock(t, c, victims)

    def free_block(self, t: Thread, c: LinuxCache, objs: list[int]) -> list[LinuxSlab]:
        """free_block (list_lock held): each object back to its slab; a slab that empties is
        destroyed when the node holds more than free_limit free objects, else put at the
        head of slabs_free; a slab still in use goes to the tail of slabs_partial. Returns the
        slabs to destroy after the lock is dropped (empty with destroy_under_lock).

        The costs (slab_obj_op and list_op per object) are charged once, before a slab is
        destroyed under the lock and at the end; num_active drops by the batch at once (only
        slab_destroy runs in between, and it reads neither). A slab already at the tail of
        slabs_partial is not unlinked and relinked there (the same list either way)."""
        num = c.geo.num
        owner = c.owner
        nodelists = c.nodelists
        per_obj = self._free_block_obj_ns
        c.num_active -= len(objs)
        later: list[LinuxSlab] = []
        uncharged = 0
        for obj in objs:
            slab = owner[obj]
            l3 = nodelists[slab.nodeid]
            slab.free.append(obj)
            slab.inuse -= 1
            l3.free_objects += 1
            uncharged += 1
            if slab.inuse == 0:
                if l3.free_objects > l3.free_limit:
                    slab.on.remove(slab)
                    l3.free_objects -= num
                    if self._destroy_under_lock:
                        t.charge_ns(uncharged * per_obj)
                        uncharged = 0
                        self.slab_destroy(t, c, slab, "free_limit")
                    else:
                        later.append(slab)
                else:
                    l3.slabs_free.move(slab)
            else:
                partial = l3.slabs_partial
                if slab is not partial.tail:
                    partial.move_tail(slab)
        t.charge_ns(uncharged * per_obj)
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

