"""The illumos kmem slab layer: slab creation and destruction with the cache lock dropped, raw
buffer allocation from the front partial slab, and buffer free with the complete/partial/empty
transitions and the consolidator's deadlist.

Models kmem_slab_create, kmem_slab_destroy, kmem_slab_alloc_impl, kmem_slab_alloc,
kmem_slab_free and kmem_slab_free_constructed (seeds/002, L1510-1908, L2285-2309). A mixin of
`SolarisPolicy`; every path runs in a simulated thread, with IRQs on (illumos kmem never
disables interrupts: its locks are adaptive mutexes).

Deviations (also noted at the code):
- Slab memory comes from the cache's vmem arena (vmem.py and its deviations).
- vmem's VM_SLEEP wait (cv_wait until an arena free) is a wait on the policy's own
  `kmem_vmem` wait queue, woken by every slab destroy, with a one-tick timeout so that memory
  freed by other kernel users is noticed too. Every failed slab allocation calls kmem_reap()
  first, as vmem does when an arena runs dry.
- The kmem_slab_cache / kmem_bufctl_cache buffers of a hashed slab are addresses the model
  keeps beside its Python slab record (their contents are not simulated).
- Filling a new slab with the 0xbaddcafe pattern (copy_pattern, L1543) costs "object_move" per
  64-byte line (the cost table has no memset entry).
- A free of an address that is not an allocated buffer of the cache (kmem_error KMERR_BADADDR,
  or a double free the non-debug kernel would not notice) raises InvariantError.
"""

from __future__ import annotations

from policies.base import Gen, InvariantError
from policies.solaris.cache import KmemCache
from policies.solaris.slab import KMEM_SLAB_MOVE_PENDING, KMEM_SLAB_NOMOVE, KmemSlab
from simcore.cpu import Thread
from simcore.flags import KM_NOSLEEP

PATTERN_LINE = 64
"""Bytes of pattern fill charged as one "object_move"."""


class KmemSlabLayer:
    """Slab-layer paths of the illumos kmem policy (mixed into SolarisPolicy)."""

    # --- memory -------------------------------------------------------------------------
    def _vmem_alloc(self, t: Thread, cp: KmemCache, kmflag: int) -> Gen:
        """vmem_alloc(cache_arena, slabsize, kmflag & KM_VMFLAGS) (vmem_xalloc for a quantum
        cache's slab): the slab's memory. A KM_SLEEP request waits until memory is returned
        and never fails; KM_NOSLEEP fails. No lock held, IRQs on."""
        vmp = self.vmem[cp.arena]
        xalloc = "KMC_QCACHE" in cp.cflags
        while True:
            gen = self.vmem_frees
            if xalloc:
                addr = yield from self.vmem_xalloc(t, vmp, cp.slabsize, kmflag)
            else:
                addr = yield from self.vmem_alloc(t, vmp, cp.slabsize, kmflag)
            if addr is not None:
                return addr
            yield from self.kmem_reap(t)
            if kmflag & KM_NOSLEEP:
                return None
            self.vmem_waits += 1
            yield from self.vmem_wq.wait_event_timeout(
                t, lambda g=gen: self.vmem_frees != g, self.machine.tick_ns)

    def _vmem_free(self, t: Thread, cp: KmemCache, addr: int) -> Gen:
        """vmem_free of one slab (vmem_xfree for a quantum cache's); wakes VM_SLEEP
        waiters."""
        vmp = self.vmem[cp.arena]
        if "KMC_QCACHE" in cp.cflags:
            yield from self.vmem_xfree(t, vmp, addr, cp.slabsize)
        else:
            yield from self.vmem_free(t, vmp, addr, cp.slabsize)
        self.vmem_frees += 1
        if self.vmem_wq.waiters:
            yield from self.vmem_wq.wake_up_all(t)

    # --- slab creation and destruction --------------------------------------------------
    def kmem_slab_create(self, t: Thread, cp: KmemCache, kmflag: int) -> Gen:
        """kmem_slab_create (L1510): advance the colour, get the slab's memory, fill it with
        the uninitialised pattern; a hashed cache's slab header comes from kmem_slab_cache
        and one bufctl per buffer from kmem_bufctl_cache, with the caller's kmflag (L1546,
        L1566). A failure unwinds in the seed's order (bufctls, header, memory: L1599-1614)
        and counts cache_alloc_fail. The free stack is in address order (the highest buffer
        is handed out first). Called without cache_lock; IRQs on. Returns the slab or
        None."""
        geo = cp.geo
        color = cp.cache_color + cp.align
        if color > geo.maxcolor:
            color = geo.mincolor
        cp.cache_color = color
        metrics = self.machine.metrics
        metrics.event("grow_start", time=t.now, cache=cp.name, cpu=t.cpu.id)
        mem = yield from self._vmem_alloc(t, cp, kmflag)
        if mem is None:
            return self._slab_create_failed(t, cp, "vmem_alloc")
        if not geo.notouch:
            t.charge("object_move", cp.slabsize // PATTERN_LINE)
        chunks = geo.chunks(color)
        sp = KmemSlab(cp, mem, mem + color, chunks)
        if geo.hashed:
            hdr = yield from self._internal_alloc(t, self.kmem_slab_cache, kmflag)
            if hdr is None:
                yield from self._vmem_free(t, cp, mem)
                return self._slab_create_failed(t, cp, "kmem_slab_cache")
            sp.header = hdr
            for _ in range(chunks):
                bcp = yield from self._internal_alloc(t, self.kmem_bufctl_cache, kmflag)
                if bcp is None:
                    yield from self._free_slab_metadata(t, sp)
                    yield from self._vmem_free(t, cp, mem)
                    return self._slab_create_failed(t, cp, "kmem_bufctl_cache")
                sp.bufctls.append(bcp)
        chunk = geo.chunksize
        sp.head = [sp.base + j * chunk for j in range(chunks)]
        sp.free_set = set(sp.head)
        t.charge("slab_obj_op", chunks)
        cp.slab_of_mem[mem] = sp
        metrics.event("grow_end", time=t.now, cache=cp.name, cpu=t.cpu.id, chunks=chunks,
                      color=color)
        return sp

    def _slab_create_failed(self, t: Thread, cp: KmemCache, where: str) -> None:
        """vmem_alloc_failure: kmem_log_event(kmem_failure_log), cache_alloc_fail++."""
        cp.cache_alloc_fail += 1
        self.machine.metrics.event("alloc_fail", time=t.now, cache=cp.name, cpu=t.cpu.id,
                                   where=f"kmem_slab_create:{where}")
        return None

    def _internal_alloc(self, t: Thread, cp: KmemCache, kmflag: int) -> Gen:
        """kmem_cache_alloc from one of kmem's own caches (magazine hit as a plain call)."""
        buf = self._alloc_hit(t, cp)
        if buf is None:
            buf = yield from self.kmem_cache_alloc(t, cp, kmflag)
        return buf

    def _internal_free(self, t: Thread, cp: KmemCache, buf: int) -> Gen:
        if not self._free_hit(t, cp, buf):
            yield from self.kmem_cache_free(t, cp, buf)

    def _free_slab_metadata(self, t: Thread, sp: KmemSlab) -> Gen:
        """The bufctls, then the header, back to their caches (L1601-1605, L1633-1637)."""
        while sp.bufctls:
            yield from self._internal_free(t, self.kmem_bufctl_cache, sp.bufctls.pop())
        if sp.header is not None:
            yield from self._internal_free(t, self.kmem_slab_cache, sp.header)
            sp.header = None

    def kmem_slab_destroy(self, t: Thread, cp: KmemCache, sp: KmemSlab) -> Gen:
        """kmem_slab_destroy (L1623): free a hashed slab's bufctls and header, then the slab's
        memory. Called without cache_lock; IRQs on."""
        del cp.slab_of_mem[sp.mem]
        sp.where = ""
        if cp.geo.hashed:
            yield from self._free_slab_metadata(t, sp)
        self.machine.metrics.event("slab_destroy", time=t.now, cache=cp.name, cpu=t.cpu.id)
        yield from self._vmem_free(t, cp, sp.mem)

    # --- buffers ------------------------------------------------------------------------
    def kmem_slab_alloc_impl(self, t: Thread, cp: KmemCache, sp: KmemSlab) -> int:
        """kmem_slab_alloc_impl (L1643): take the head buffer of `sp` (the front partial slab
        or a new one). A slab that fills up leaves the tree, loses its consolidator history
        and goes to the complete list; a new slab enters the tree. cache_lock held."""
        cp.cache_slab_alloc += 1
        cp.cache_bufslab -= 1
        sp.refcnt += 1
        buf = sp.head.pop()
        sp.free_set.discard(buf)
        t.charge("slab_obj_op")
        if not sp.head:
            if sp.refcnt > 1:
                cp.partial.remove(sp)
                sp.later_count = 0
                sp.flags &= ~KMEM_SLAB_NOMOVE
                sp.stuck_offset = -1
                t.charge("list_op")
            cp.complete[sp] = None
            sp.where = "complete"
            t.charge("list_op")
        elif sp.refcnt == 1:
            cp.partial.add(sp)
            t.charge("list_op")
        else:
            # the front slab only gets fuller and stays first: the kernel does not touch the
            # tree (its avl_update is inside an ASSERT); the sorted list refreshes its key
            cp.partial.update(sp)
        if cp.hash is not None:
            cp.hash.insert(buf, sp)
            t.charge("list_op")
        return buf

    def kmem_slab_alloc(self, t: Thread, cp: KmemCache, kmflag: int) -> Gen:
        """kmem_slab_alloc (L1712): a raw buffer from the front partial slab; with none,
        drop cache_lock, create a slab (may sleep for KM_SLEEP), re-take the lock and use it.
        The first slab allocation of a cache with a destructor runs constructor and
        destructor once (L1745). Returns the buffer (now in the caller's hands) or None."""
        lock = cp.cache_lock
        yield from lock.lock(t)
        test_destructor = cp.cache_slab_alloc == 0
        sp = cp.partial.first()
        if sp is None:
            yield from lock.unlock(t)
            sp = yield from self.kmem_slab_create(t, cp, kmflag)
            if sp is None:
                return None
            yield from lock.lock(t)
            cp.cache_slab_create += 1
            cp.cache_buftotal += sp.chunks
            cp.cache_bufmax = max(cp.cache_bufmax, cp.cache_buftotal)
            cp.cache_bufslab += sp.chunks
        buf = self.kmem_slab_alloc_impl(t, cp, sp)
        cp.inuse_base += 1
        yield from lock.unlock(t)
        if test_destructor and cp.spec.dtor_cost:
            t.charge_ns(cp.spec.ctor_cost + cp.spec.dtor_cost)
        return buf

    def _slab_of(self, cp: KmemCache, buf: int) -> KmemSlab | None:
        """KMEM_SLAB(cp, buf) for embedded slabs: the slab owning the page of `buf`."""
        return cp.slab_of_mem.get(buf - buf % cp.slabsize)

    def kmem_slab_free(self, t: Thread, cp: KmemCache, buf: int, from_transit: bool) -> Gen:
        """kmem_slab_free (L1772): return a raw buffer to its slab under cache_lock. A slab
        that empties leaves the lists and is destroyed with the lock dropped, or goes to the
        deadlist while moves are pending; a full slab re-enters the tree near the front; a
        partial one is re-sorted. `from_transit` says whose buffer lands: kmem's own (a
        magazine round, move destination, hunt buffer) or a caller's."""
        lock = cp.cache_lock
        yield from lock.lock(t)
        cp.cache_slab_free += 1
        if cp.hash is not None:
            sp, depth = cp.hash.remove(buf)
            cp.cache_lookup_depth += depth
            t.charge("list_op", depth + 1)
        else:
            sp = self._slab_of(cp, buf)
            if sp is not None and buf in sp.free_set:
                sp = None
        if (sp is None or not sp.base <= buf < sp.base + sp.chunks * cp.chunksize
                or (buf - sp.base) % cp.chunksize):
            yield from lock.unlock(t)
            raise InvariantError(f"kmem_error: {cp.name}: free of {buf:#x}, not an allocated "
                                 f"buffer of this cache (KMERR_BADADDR)")
        t.charge("slab_obj_op")
        if sp.offset(buf) == sp.stuck_offset:
            self.kmem_slab_move_yes(cp, sp, buf)
        was_full = not sp.head
        sp.head.append(buf)
        sp.free_set.add(buf)
        cp.cache_bufslab += 1
        if from_transit:
            cp.in_transit -= 1
        else:
            cp.inuse_base -= 1
        sp.refcnt -= 1
        if sp.refcnt == 0:
            if sp.chunks == 1:
                del cp.complete[sp]
            else:
                cp.partial.remove(sp)
            t.charge("list_op")
            cp.cache_buftotal -= sp.chunks
            cp.cache_bufslab -= sp.chunks
            dfg = cp.cache_defrag
            if dfg is None or (not dfg.kmd_moves_pending
                               and not sp.flags & KMEM_SLAB_MOVE_PENDING):
                cp.cache_slab_destroy += 1
                yield from lock.unlock(t)
                yield from self.kmem_slab_destroy(t, cp, sp)
                return
            if sp.flags & KMEM_SLAB_MOVE_PENDING:
                dfg.kmd_deadlist.append(sp)
            else:
                dfg.kmd_deadlist.appendleft(sp)
            dfg.kmd_deadcount += 1
            sp.where = "dead"
            yield from lock.unlock(t)
            return
        if was_full:
            del cp.complete[sp]
            cp.partial.add(sp)
            t.charge("list_op", 2)
        else:
            cp.partial.update(sp)
        yield from lock.unlock(t)

    def kmem_slab_free_constructed(self, t: Thread, cp: KmemCache, buf: int,
                                   from_transit: bool) -> Gen:
        """kmem_slab_free_constructed (L2286): run the destructor, then kmem_slab_free. No
        lock held on entry."""
        if cp.spec.dtor_cost:
            t.charge_ns(cp.spec.dtor_cost)
        yield from self.kmem_slab_free(t, cp, buf, from_transit)
