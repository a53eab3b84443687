"""SLUB partial slabs (linux-6.8-mm-slub.c): the node partial lists under list_lock
(add_partial, remove_partial, get_partial_node, get_any_partial, get_partial), the cpu partial
lists (put_cpu_partial, __put_partials), deactivate_slab, and the free slow path __slab_free.

Locking as in the seed: list_lock is always taken with spin_lock_irqsave; the cpu partial list
is changed under local_lock_irqsave (IRQs off on this CPU, no lock); a slab's freelist and
counters change in one cmpxchg_double, with list_lock taken first only when the slab may have
to move between lists.
"""

from __future__ import annotations

from policies.base import Gen
from policies.slub.structs import (
    ALLOC_FROM_PARTIAL,
    CMPXCHG_DOUBLE_FAIL,
    CPU_PARTIAL_DRAIN,
    CPU_PARTIAL_FREE,
    CPU_PARTIAL_NODE,
    DEACTIVATE_EMPTY,
    DEACTIVATE_FULL,
    DEACTIVATE_REMOTE_FREES,
    DEACTIVATE_TO_HEAD,
    DEACTIVATE_TO_TAIL,
    FREE_ADD_PARTIAL,
    FREE_FROZEN,
    FREE_REMOVE_PARTIAL,
    FREE_SLAB,
    FREE_SLOWPATH,
    NUMA_NO_NODE,
    KmemCacheNode,
    Slab,
    SlubCache,
)
from simcore.cpu import Thread


class SlubPartial:
    """Partial-list paths of SlubPolicy."""

    # --- node partial list (list_lock held) ----------------------------------------------
    def add_partial(self, t: Thread, n: KmemCacheNode, slab: Slab, tail: int) -> None:
        """add_partial (list_lock held): head or tail of the node's partial list."""
        if tail == DEACTIVATE_TO_TAIL:
            n.partial.add_tail(slab)
        else:
            n.partial.add(slab)
        slab.node_partial = True
        t.charge("list_op")

    def remove_partial(self, t: Thread, n: KmemCacheNode, slab: Slab) -> None:
        """remove_partial (list_lock held)."""
        n.partial.remove(slab)
        slab.node_partial = False
        t.charge("list_op")

    def get_partial_node(self, t: Thread, s: SlubCache, n: KmemCacheNode) -> Gen:
        """get_partial_node: an unlocked look at nr_partial, then under list_lock take slabs
        from the head: the first is returned (ALLOC_FROM_PARTIAL), further ones go to this
        CPU's partial list (CPU_PARTIAL_NODE) until more than cpu_partial_slabs / 2 were
        moved."""
        if not n.nr_partial:
            return None
        irqf = yield from n.list_lock.lock_irqsave(t)
        partial = None
        moved = 0
        slab = n.partial.head
        while slab is not None:
            nxt = slab.next
            self.remove_partial(t, n, slab)
            if partial is None:
                partial = slab
                self.stat(t, s, ALLOC_FROM_PARTIAL)
            else:
                yield from self.put_cpu_partial(t, s, slab, False)
                self.stat(t, s, CPU_PARTIAL_NODE)
                moved += 1
            if not s.has_cpu_partial or moved > s.cpu_partial_slabs // 2:
                break
            slab = nxt
        yield from n.list_lock.unlock_irqrestore(t, irqf)
        return partial

    def get_any_partial(self, t: Thread, s: SlubCache) -> Gen:
        """get_any_partial (NUMA): unless get_cycles() % 1024 exceeds remote_node_defrag_ratio,
        try the other nodes in distance order, each only if it has more than min_partial
        partial slabs."""
        m = self.machine
        if m.nodes < 2:
            return None
        if not s.remote_node_defrag_ratio or (
                self._cycles.integers(1024) > s.remote_node_defrag_ratio):
            return None
        here = t.cpu.node
        for k in range(1, m.nodes):
            n = s.node[(here + k) % m.nodes]
            if n.nr_partial > s.min_partial:
                slab = yield from self.get_partial_node(t, s, n)
                if slab is not None:
                    return slab
        return None

    def get_partial(self, t: Thread, s: SlubCache, node: int) -> Gen:
        """get_partial: the requested node (or this CPU's memory node), then for
        NUMA_NO_NODE requests the other nodes."""
        search = t.cpu.node if node == NUMA_NO_NODE else node
        slab = yield from self.get_partial_node(t, s, s.node[search])
        if slab is not None or node != NUMA_NO_NODE:
            return slab
        return (yield from self.get_any_partial(t, s))

    # --- cpu partial list -------------------------------------------------------------------
    def put_cpu_partial(self, t: Thread, s: SlubCache, slab: Slab, drain: bool) -> Gen:
        """put_cpu_partial (local_lock_irqsave): push the slab on this CPU's partial list; with
        `drain` and cpu_partial_slabs already there, detach the old list first and give it to
        __put_partials after the local lock is dropped (CPU_PARTIAL_DRAIN)."""
        was_off = t.local_irq_save()
        c = s.cpu_slab[t.cpu.id]
        to_put = None
        if c.partial and drain and len(c.partial) >= s.cpu_partial_slabs:
            to_put = c.partial
            c.partial = []
        c.partial.append(slab)
        t.charge("list_op")
        yield from t.local_irq_restore(was_off)
        if to_put is not None:
            yield from self.put_partials_list(t, s, to_put)
            self.stat(t, s, CPU_PARTIAL_DRAIN)

    def put_partials_list(self, t: Thread, s: SlubCache, slabs: list[Slab]) -> Gen:
        """__put_partials: walk a detached cpu partial list from its head, each slab to the
        tail of its node's partial list under that node's list_lock (FREE_ADD_PARTIAL),
        except empty slabs while the node already has min_partial, which are discarded after
        the lock is dropped (DEACTIVATE_EMPTY, FREE_SLAB)."""
        n = None
        irqf = False
        discard: list[Slab] = []
        for slab in reversed(slabs):
            n2 = s.node[slab.node]
            if n is not n2:
                if n is not None:
                    yield from n.list_lock.unlock_irqrestore(t, irqf)
                n = n2
                irqf = yield from n.list_lock.lock_irqsave(t)
            if not slab.inuse and n.nr_partial >= s.min_partial:
                discard.append(slab)
            else:
                self.add_partial(t, n, slab, DEACTIVATE_TO_TAIL)
                self.stat(t, s, FREE_ADD_PARTIAL)
        if n is not None:
            yield from n.list_lock.unlock_irqrestore(t, irqf)
        for slab in reversed(discard):
            self.stat(t, s, DEACTIVATE_EMPTY)
            yield from self.discard_slab(t, s, slab, "put_partials")
            self.stat(t, s, FREE_SLAB)

    # --- deactivation -------------------------------------------------------------------------
    def deactivate_slab(self, t: Thread, s: SlubCache, slab: Slab, freelist: list[int]) -> Gen:
        """deactivate_slab (the slab already taken from kmem_cache_cpu): splice the CPU's
        freelist in front of the slab's own and unfreeze it in one cmpxchg_double; then
        discard it if empty and the node has min_partial partial slabs, else put it on the
        node partial list (tail if it had remote frees, head otherwise) under list_lock, or
        leave it off every list when full."""
        n = s.node[slab.node]
        tail = DEACTIVATE_TO_HEAD
        if slab.freelist:
            self.stat(t, s, DEACTIVATE_REMOTE_FREES)
            tail = DEACTIVATE_TO_TAIL
        t.charge("object_move", len(freelist))
        slab.inuse -= len(freelist)
        slab.freelist.extend(freelist)
        s.transit -= len(freelist)
        slab.frozen = False
        t.charge("atomic_op")
        if not slab.inuse and n.nr_partial >= s.min_partial:
            self.stat(t, s, DEACTIVATE_EMPTY)
            yield from self.discard_slab(t, s, slab, "deactivate")
            self.stat(t, s, FREE_SLAB)
        elif slab.freelist:
            irqf = yield from n.list_lock.lock_irqsave(t)
            self.add_partial(t, n, slab, tail)
            yield from n.list_lock.unlock_irqrestore(t, irqf)
            self.stat(t, s, tail)
        else:
            self.stat(t, s, DEACTIVATE_FULL)

    # --- free slow path -----------------------------------------------------------------------
    def slab_free_slow(self, t: Thread, s: SlubCache, slab: Slab, objs: list[int]) -> Gen:
        """__slab_free: return `objs` (all of one slab, in transit) to the slab's freelist with one
        cmpxchg_double. list_lock is taken first, speculatively, only when the slab is not
        frozen and either becomes empty or was full with no cpu partial lists. A full slab
        gets its first free back onto this CPU's partial list (put_cpu_partial, no list_lock);
        a slab that empties on the node partial list beyond min_partial is removed and
        discarded (FREE_REMOVE_PARTIAL, FREE_SLAB)."""
        self.stat(t, s, FREE_SLOWPATH)
        cnt = len(objs)
        while True:
            prior = bool(slab.freelist)
            was_frozen = slab.frozen
            inuse = slab.inuse - cnt
            n = None
            irqf = False
            on_node_partial = False
            if (not inuse or not prior) and not was_frozen:
                if not s.has_cpu_partial or prior:
                    n = s.node[slab.node]
                    irqf = yield from n.list_lock.lock_irqsave(t)
                    on_node_partial = slab.node_partial
            t.charge("atomic_op")
            if n is not None and (bool(slab.freelist) != prior or slab.frozen != was_frozen
                                  or slab.inuse - cnt != inuse):
                # the slab changed while we spun for list_lock: the cmpxchg fails, retry
                self.stat(t, s, CMPXCHG_DOUBLE_FAIL)
                yield from n.list_lock.unlock_irqrestore(t, irqf)
                continue
            slab.freelist.extend(objs)
            slab.inuse = inuse
            s.transit -= cnt
            break
        if n is None:
            if was_frozen:
                self.stat(t, s, FREE_FROZEN)
            elif s.has_cpu_partial and not prior:
                yield from self.put_cpu_partial(t, s, slab, True)
                self.stat(t, s, CPU_PARTIAL_FREE)
            return
        if prior and not on_node_partial:
            yield from n.list_lock.unlock_irqrestore(t, irqf)
            return
        if not inuse and n.nr_partial >= s.min_partial:
            if prior:
                self.remove_partial(t, n, slab)
                self.stat(t, s, FREE_REMOVE_PARTIAL)
            yield from n.list_lock.unlock_irqrestore(t, irqf)
            self.stat(t, s, FREE_SLAB)
            yield from self.discard_slab(t, s, slab, "slab_free")
            return
        if not s.has_cpu_partial and not prior:
            self.add_partial(t, n, slab, DEACTIVATE_TO_TAIL)
            self.stat(t, s, FREE_ADD_PARTIAL)
        yield from n.list_lock.unlock_irqrestore(t, irqf)
