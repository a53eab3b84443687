"""Linux SLAB slab growth (seed 003 mm/slab.c cache_grow): colour step under list_lock, IRQs
on only for requests that may sleep, pages then constructors, link to slabs_free."""

from __future__ import annotations

from policies.base import Gen
from policies.linux_slab.structs import LinuxCache, LinuxSlab
from simcore.cpu import Thread
from simcore.flags import can_sleep


class SlabGrow:
    """cache_grow of LinuxSlabPolicy."""

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

