"""SLUB slab pages (linux-6.8-mm-slub.c): new_slab / allocate_slab (preferred order, then the
minimum order on failure), discard_slab / free_slab, and the two slab-freelist transfers to a
CPU, freeze_slab and get_freelist (cmpxchg_double on the slab's freelist and counters)."""

from __future__ import annotations

from policies.base import Gen
from policies.slub.structs import ORDER_FALLBACK, Slab, SlubCache
from simcore.cpu import Thread
from simcore.flags import KM_NOSLEEP


class SlubSlabs:
    """Slab page paths of SlubPolicy."""

    def new_slab(self, t: Thread, s: SlubCache, flags: int, node: int) -> Gen:
        """new_slab -> allocate_slab (preemption and IRQs on; may sleep in reclaim): try
        s->oo without reclaim when it is above s->min, then s->min with the caller's flags
        (ORDER_FALLBACK); lay the objects out in address order as the slab's freelist and run
        the constructor on each (setup_object). None when the page allocator fails."""
        m = self.machine
        geo = s.geo
        order, objects = geo.order, geo.objects
        first = flags | KM_NOSLEEP if order > geo.min_order else flags
        m.metrics.event("grow_start", cache=s.name, cpu=t.cpu.id)
        base = yield from m.memory.alloc_pages(t, order, first)
        if base is None and order > geo.min_order:
            order, objects = geo.min_order, geo.min_objects
            base = yield from m.memory.alloc_pages(t, order, flags)
            if base is not None:
                self.stat(t, s, ORDER_FALLBACK)
        if base is None:
            return None
        slab = Slab(base, order, objects, node)
        step = geo.size
        slab.freelist = [base + i * step for i in range(objects - 1, -1, -1)]
        owner = s.owner
        for obj in slab.freelist:
            owner[obj] = slab
        s.slabs[slab] = None
        if s.spec.ctor_cost:
            t.charge_ns(s.spec.ctor_cost * objects)
        t.charge("slab_obj_op", objects)
        self.slabs_created += 1
        m.metrics.event("grow_end", cache=s.name, cpu=t.cpu.id)
        return slab

    def inc_slabs_node(self, s: SlubCache, slab: Slab) -> None:
        """inc_slabs_node: count the slab on its node (done when it first becomes a cpu slab
        or is handed out by bulk allocation)."""
        n = s.node[slab.node]
        n.nr_slabs += 1
        n.total_objects += slab.objects
        n.pages += 1 << slab.order

    def discard_slab(self, t: Thread, s: SlubCache, slab: Slab, why: str) -> Gen:
        """discard_slab: dec_slabs_node, then free_slab -> __free_slab returns the pages (no
        list_lock held; SLAB_TYPESAFE_BY_RCU is not modelled)."""
        n = s.node[slab.node]
        n.nr_slabs -= 1
        n.total_objects -= slab.objects
        n.pages -= 1 << slab.order
        owner = s.owner
        base, end = slab.base, slab.base + slab.objects * s.geo.size
        for obj in range(base, end, s.geo.size):
            del owner[obj]
        del s.slabs[slab]
        slab.freelist = []
        self.slabs_freed += 1
        self.machine.metrics.event("slab_free", cache=s.name, cpu=t.cpu.id, why=why)
        yield from self.machine.memory.free_pages(t, slab.base, slab.order)

    def freeze_slab(self, t: Thread, s: SlubCache, slab: Slab) -> list[int]:
        """freeze_slab: take a partial slab's whole freelist for this CPU (inuse = objects,
        frozen) in one cmpxchg_double."""
        freelist = slab.freelist
        slab.freelist = []
        slab.inuse = slab.objects
        slab.frozen = True
        t.charge("atomic_op")
        return freelist

    def get_freelist(self, t: Thread, s: SlubCache, slab: Slab) -> list[int]:
        """get_freelist (cpu_slab lock held): take the objects freed remotely into the cpu
        slab; the slab stays frozen only if there were any."""
        freelist = slab.freelist
        slab.freelist = []
        slab.inuse = slab.objects
        slab.frozen = bool(freelist)
        t.charge("atomic_op")
        return freelist
