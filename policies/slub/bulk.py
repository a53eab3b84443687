"""SLUB bulk operations (linux-6.8-mm-slub.c) as the sheaves use them: __kmem_cache_alloc_bulk
(the cpu freelist drained with IRQs off, ___slab_alloc when it runs dry) and
__kmem_cache_free_bulk with build_detached_freelist (objects of one slab, found with a
three-step look-ahead, freed to it with one do_slab_free)."""

from __future__ import annotations

from policies.base import Gen
from policies.slub.structs import ALLOC_FASTPATH, NUMA_NO_NODE, Slab, SlubCache
from simcore.cpu import Thread


class SlubBulk:
    """Bulk allocation and free of SlubPolicy."""

    def alloc_bulk(self, t: Thread, s: SlubCache, flags: int, size: int) -> Gen:
        """__kmem_cache_alloc_bulk: with preemption and IRQs off take objects from the cpu
        freelist (ALLOC_FASTPATH each); when it is empty bump tid, enable IRQs and run
        ___slab_alloc for one object, then continue. On failure everything taken is freed
        again and the result is empty. The objects returned are in transit."""
        out: list[int] = []
        t.preempt_count += 1
        was_off = t.local_irq_save()
        c = s.cpu_slab[t.cpu.id]
        while len(out) < size:
            c = s.cpu_slab[t.cpu.id]
            if not c.freelist:
                c.tid += 1
                yield from t.local_irq_restore(was_off)
                obj = yield from self.slab_alloc_slow(t, s, flags, NUMA_NO_NODE)
                if obj is None:
                    t.preempt_count -= 1
                    yield from self.free_bulk(t, s, out)
                    return []
                out.append(obj)
                was_off = t.local_irq_save()
                continue
            out.append(c.freelist.pop())
            s.transit += 1
            t.charge("object_move")
            c.stat[ALLOC_FASTPATH] += 1
        c.tid += 1
        yield from t.local_irq_restore(was_off)
        t.preempt_count -= 1
        return out

    def build_detached_freelist(self, t: Thread, s: SlubCache, objs: list[int]
                                ) -> tuple[Slab, list[int]]:
        """build_detached_freelist: the last object and every object of the same slab found
        scanning backwards, giving up after three objects of other slabs; the found ones are
        removed from the end of `objs`."""
        owner = s.owner
        size = len(objs) - 1
        obj = objs[size]
        slab = owner[obj]
        group = [obj]
        same = size
        lookahead = 3
        while size:
            size -= 1
            o = objs[size]
            t.charge("object_move")
            if owner[o] is slab:
                group.append(o)
                same -= 1
                if size != same:
                    objs[size], objs[same] = objs[same], objs[size]
                continue
            lookahead -= 1
            if not lookahead:
                break
        del objs[same:]
        return slab, group

    def free_bulk(self, t: Thread, s: SlubCache, objs: list[int]) -> Gen:
        """__kmem_cache_free_bulk: detached freelists (of objects in transit), each freed with
        do_slab_free."""
        objs = list(objs)
        while objs:
            slab, group = self.build_detached_freelist(t, s, objs)
            yield from self.do_slab_free(t, s, slab, group)
