"""The illumos kmem slab consolidator: the fragmentation test, the periodic scan, moving
buffers off the least-used partial slabs through the client's move callback, the magazine hunt
on DONT_KNOW, desperate defragmentation under memory pressure, and move notification.

Models kmem_cache_set_move, kmem_slab_allocated, kmem_slab_is_reclaimable, kmem_hunt_mag(s),
kmem_slab_move_yes, kmem_slab_move_no, kmem_move_buffer, kmem_move_begin, kmem_move_end,
kmem_move_buffers, kmem_cache_move_notify(_task), kmem_cache_defrag,
kmem_cache_frag_threshold, kmem_cache_is_fragmented, kmem_cache_scan and the reclaim threshold
(seeds/002, L3519-3600, L4068-4997). A mixin of `SolarisPolicy`. Scans and notifications run
on `kmem_taskq`; every move callback runs on the single global `kmem_move_taskq`. IRQs on.

The client is a plain function `move(t, old_addr, new_addr, size) -> str` returning "YES",
"NO", "LATER", "DONT_NEED" or "DONT_KNOW"; on YES the client now holds `new_addr`, on
DONT_NEED it has given `old_addr` up.

Choices and deviations (also noted at the code):
- The size_t quirk of kmem_cache_scan (L4927, L4939-4944) is reproduced: an aborted scan adds
  -1 modulo 2^64 to kmd_slabs_found, which wraps it when it was 0 and then blocks that
  period's threshold adjustment.
- kmem_move_cache (the move requests) is not modelled as a cache: a request costs one
  "kmalloc" to allocate and one to free and never fails, so a scan never ends for lack of
  memory (kms_endscan_nomem stays 0). The move taskq dispatch never fails either.
- Searching a magazine round costs "object_move" per round compared; the callback itself
  costs "call" (plus whatever the client function charges).
- The DEBUG-kernel random scans and reaps (kmem_mtb_move, kmem_mtb_reap) are not modelled.
- `kmem_move_stats` (a KMEM_STATS build's global counters) is always kept.
"""

from __future__ import annotations

from policies.base import Gen
from policies.solaris.cache import (
    KMM_DESPERATE,
    KMM_NOTIFY,
    KmemCache,
    KmemDefrag,
    KmemMove,
    MoveCallback,
)
from policies.solaris.magazine import Magazine
from policies.solaris.slab import (
    KMEM_SLAB_MOVE_PENDING,
    KMEM_SLAB_NOMOVE,
    KMEM_VOID_FRACTION,
    KmemSlab,
)
from policies.solaris.update import U64
from simcore.cpu import Thread
from simcore.flags import KM_NOSLEEP

KMEM_DISBELIEF = 3
"""LATER answers for one slab before kmem treats them as NO."""
MOVE_RESPONSES = ("YES", "NO", "LATER", "DONT_NEED", "DONT_KNOW")


class KmemConsolidator:
    """Consolidator paths of the illumos kmem policy (mixed into SolarisPolicy)."""

    # --- set-up ---------------------------------------------------------------------------
    def kmem_cache_set_move(self, cp: KmemCache, move: MoveCallback) -> bool:
        """kmem_cache_set_move (L3550): give a cache a move callback and consolidator state.
        Refused (ValueError, the kernel asserts) for NOTOUCH and identifier caches and after
        the first allocation; silently ignored unless KMEM_IS_MOVABLE (2 * chunk <= slab).
        Plain call at set-up time; returns whether the cache is now movable."""
        if cp.geo.notouch or "KMC_IDENTIFIER" in cp.cflags:
            raise ValueError(f"kmem_cache_set_move: {cp.name} is NOTOUCH or an identifier cache")
        if 2 * cp.chunksize > cp.slabsize:
            return False
        if cp.cache_move is None:
            if cp.cache_slab_alloc:
                raise ValueError(f"kmem_cache_set_move: {cp.name} already allocated from")
            cp.cache_defrag = KmemDefrag()
        cp.cache_move = move
        return True

    # --- slab predicates and marks (cache_lock held) ----------------------------------------
    def kmem_slab_allocated(self, t: Thread, cp: KmemCache, sp: KmemSlab | None,
                            buf: int) -> KmemSlab | None:
        """kmem_slab_allocated (L4075): the slab of `buf` if it is allocated (as the slab layer
        sees it: in use or in a magazine), else None. cache_lock held."""
        t.charge("slab_obj_op")
        if cp.hash is not None:
            return cp.hash.lookup(buf)
        if sp is None:
            sp = self._slab_of(cp, buf)
            if sp is None:
                return None
        return None if buf in sp.free_set else sp

    def kmem_slab_is_reclaimable(self, cp: KmemCache, sp: KmemSlab, flags: int) -> bool:
        """kmem_slab_is_reclaimable (L4105): desperate requests take any partial slab; else a
        NOMOVE slab never qualifies; else one with a single buffer, or refcnt/chunks below
        kmd_reclaim_numer/8 (any partial slab with kmem_move_any_partial)."""
        refcnt = sp.refcnt
        if flags & KMM_DESPERATE:
            return refcnt < sp.chunks
        if sp.flags & KMEM_SLAB_NOMOVE:
            return False
        if self.tun["kmem_move_any_partial"]:
            return refcnt < sp.chunks
        if refcnt == 1 and refcnt < sp.chunks:
            return True
        return refcnt * KMEM_VOID_FRACTION < sp.chunks * cp.cache_defrag.kmd_reclaim_numer

    def kmem_slab_move_yes(self, cp: KmemCache, sp: KmemSlab, from_buf: int) -> None:
        """kmem_slab_move_yes (L4235): a partial NOMOVE slab whose stuck buffer moved (or was
        freed) loses the mark and is re-sorted; otherwise the LATER history is cleared.
        cache_lock held."""
        if not sp.is_partial():
            return
        if sp.flags & KMEM_SLAB_NOMOVE:
            if sp.offset(from_buf) == sp.stuck_offset:
                cp.partial.remove(sp)
                sp.flags &= ~KMEM_SLAB_NOMOVE
                sp.stuck_offset = -1
                cp.partial.add(sp)
        else:
            sp.later_count = 0
            sp.stuck_offset = -1

    def kmem_slab_move_no(self, cp: KmemCache, sp: KmemSlab, from_buf: int) -> None:
        """kmem_slab_move_no (L4258): mark a partial slab NOMOVE with the refused buffer as
        stuck; it re-sorts to the front of the tree. cache_lock held."""
        if not sp.is_partial():
            return
        cp.partial.remove(sp)
        sp.later_count = 0
        sp.flags |= KMEM_SLAB_NOMOVE
        sp.stuck_offset = sp.offset(from_buf)
        cp.partial.add(sp)

    # --- the magazine hunt ----------------------------------------------------------------
    @staticmethod
    def _hunt_mag(t: Thread, m: Magazine | None, n: int, buf: int, tbuf: int) -> bool:
        """kmem_hunt_mag (L4143): replace `buf` by `tbuf` among the first n rounds of m."""
        if m is None or n <= 0:
            return False
        try:
            i = m.mag_round.index(buf, 0, n)
        except ValueError:
            t.charge("object_move", n)
            return False
        t.charge("object_move", i + 1)
        m.mag_round[i] = tbuf
        return True

    def kmem_hunt_mags(self, t: Thread, cp: KmemCache, buf: int) -> Gen:
        """kmem_hunt_mags (L4168): allocate a swap buffer (KM_NOSLEEP), search the depot's full
        magazines under the depot lock and every CPU's loaded and previous magazines under
        its cc_lock; on a hit the swap buffer takes the target's slot and the target is
        returned (now kmem's, in transit). No hit: the swap buffer is freed. No cache_lock."""
        tbuf = yield from self.kmem_cache_alloc(t, cp, KM_NOSLEEP)
        if tbuf is None:
            self.kmem_move_stats["kms_hunt_alloc_fail"] += 1
            return None
        cp.inuse_base -= 1
        cp.in_transit += 1
        if tbuf == buf:
            self.kmem_move_stats["kms_hunt_lucky"] += 1
            return buf
        lock = cp.cache_depot_lock
        yield from lock.lock(t)
        n = cp.cache_magtype.mt_magsize
        for m in reversed(cp.cache_full.ml_list):
            if self._hunt_mag(t, m, n, buf, tbuf):
                yield from lock.unlock(t)
                return buf
        yield from lock.unlock(t)
        for ccp in cp.cache_cpu:
            yield from self._cc_enter(t, ccp.cc_lock)
            if (self._hunt_mag(t, ccp.cc_loaded, ccp.cc_rounds, buf, tbuf)
                    or self._hunt_mag(t, ccp.cc_ploaded, ccp.cc_prounds, buf, tbuf)):
                ccp.cc_lock._release(t)
                return buf
            ccp.cc_lock._release(t)
        cp.in_transit -= 1
        cp.inuse_base += 1
        yield from self.kmem_cache_free(t, cp, tbuf)
        return None

    # --- one move ---------------------------------------------------------------------------
    def kmem_move_buffer(self, t: Thread, cb: KmemMove) -> Gen:
        """kmem_move_buffer (L4302), on kmem_move_taskq: re-check the source slab, skip a
        source already free on its slab, construct the destination, call the client and act
        on its answer (see the module docstring); the destination is destructed and freed
        unless the answer was YES."""
        sp = cb.kmm_from_slab
        cp = sp.cache
        dfg = cp.cache_defrag
        stats = self.kmem_move_stats
        frm, to = cb.kmm_from_buf, cb.kmm_to_buf
        if not self.kmem_slab_is_reclaimable(cp, sp, cb.kmm_flags):
            stats["kms_no_longer_reclaimable"] += 1
            if cb.kmm_flags & KMM_NOTIFY:
                stats["kms_notify_no_longer_reclaimable"] += 1
            yield from self.kmem_slab_free(t, cp, to, True)
            yield from self.kmem_move_end(t, cp, cb)
            return
        lock = cp.cache_lock
        yield from lock.lock(t)
        free_on_slab = self.kmem_slab_allocated(t, cp, sp, frm) is None
        yield from lock.unlock(t)
        if free_on_slab:
            stats["kms_hunt_found_slab"] += 1
            yield from self.kmem_slab_free(t, cp, to, True)
            yield from self.kmem_move_end(t, cp, cb)
            return
        if cp.spec.ctor_cost:
            t.charge_ns(cp.spec.ctor_cost)
        stats["kms_callbacks"] += 1
        if cb.kmm_flags & KMM_NOTIFY:
            stats["kms_notify_callbacks"] += 1
        dfg.kmd_callbacks += 1
        t.charge("call")
        response = cp.cache_move(t, frm, to, cp.spec.size)
        self.machine.metrics.event("consolidator_move", time=t.now, cache=cp.name, old=frm, new=to,
                                   response=response)
        if response == "YES":
            stats["kms_yes"] += 1
            dfg.kmd_yes += 1
            cp.in_transit -= 1
            cp.inuse_base += 1
            yield from self.kmem_slab_free_constructed(t, cp, frm, False)
            yield from lock.lock(t)
            self.kmem_slab_move_yes(cp, sp, frm)
            yield from lock.unlock(t)
            yield from self.kmem_move_end(t, cp, cb)
            return
        if response == "NO":
            stats["kms_no"] += 1
            dfg.kmd_no += 1
            yield from lock.lock(t)
            self.kmem_slab_move_no(cp, sp, frm)
            yield from lock.unlock(t)
        elif response == "LATER":
            stats["kms_later"] += 1
            dfg.kmd_later += 1
            yield from lock.lock(t)
            if sp.is_partial():
                sp.later_count += 1
                if sp.later_count >= KMEM_DISBELIEF:
                    stats["kms_disbelief"] += 1
                    self.kmem_slab_move_no(cp, sp, frm)
                elif not sp.flags & KMEM_SLAB_NOMOVE:
                    sp.stuck_offset = sp.offset(frm)
            yield from lock.unlock(t)
        elif response == "DONT_NEED":
            stats["kms_dont_need"] += 1
            dfg.kmd_dont_need += 1
            yield from self.kmem_slab_free_constructed(t, cp, frm, False)
            yield from lock.lock(t)
            self.kmem_slab_move_yes(cp, sp, frm)
            yield from lock.unlock(t)
        elif response == "DONT_KNOW":
            stats["kms_dont_know"] += 1
            dfg.kmd_dont_know += 1
            found = yield from self.kmem_hunt_mags(t, cp, frm)
            if found is not None:
                stats["kms_hunt_found_mag"] += 1
                dfg.kmd_hunt_found += 1
                yield from self.kmem_slab_free_constructed(t, cp, frm, True)
                yield from lock.lock(t)
                self.kmem_slab_move_yes(cp, sp, frm)
                yield from lock.unlock(t)
        else:
            raise ValueError(f"'{cp.name}' unexpected move callback response {response!r}")
        yield from self.kmem_slab_free_constructed(t, cp, to, True)
        yield from self.kmem_move_end(t, cp, cb)

    def kmem_move_begin(self, t: Thread, cp: KmemCache, sp: KmemSlab, buf: int,
                        flags: int) -> Gen:
        """kmem_move_begin (L4454), on kmem_taskq with cache_lock dropped and the source slab
        MOVE_PENDING: unless there is at most one partial slab or the move is already pending
        (then only DESPERATE is or-ed in), take the destination from the front partial slab
        now (never a new slab) and queue kmem_move_buffer on kmem_move_taskq."""
        t.charge("kmalloc")
        lock = cp.cache_lock
        yield from lock.lock(t)
        dfg = cp.cache_defrag
        if len(cp.partial) <= 1:
            yield from lock.unlock(t)
            t.charge("kmalloc")
            return True
        pending = dfg.kmd_moves_pending.get(buf)
        if pending is not None:
            if flags & KMM_DESPERATE:
                pending.kmm_flags |= KMM_DESPERATE
            yield from lock.unlock(t)
            self.kmem_move_stats["kms_already_pending"] += 1
            t.charge("kmalloc")
            return True
        to_buf = self.kmem_slab_alloc_impl(t, cp, cp.partial.first())
        cp.in_transit += 1
        cb = KmemMove(sp, buf, to_buf, flags)
        dfg.kmd_moves_pending[buf] = cb
        yield from lock.unlock(t)
        yield from self.kmem_move_taskq.dispatch(t, self.kmem_move_buffer, cb)
        return True

    def kmem_move_end(self, t: Thread, cp: KmemCache, cb: KmemMove) -> Gen:
        """kmem_move_end (L4518): drop the pending entry; when it was the last, destroy the
        deadlist's slabs from the head, stopping at one kmem_move_buffers still holds
        (MOVE_PENDING, re-queued at the tail). cache_lock taken here; dropped around each
        slab destroy."""
        lock = cp.cache_lock
        yield from lock.lock(t)
        dfg = cp.cache_defrag
        del dfg.kmd_moves_pending[cb.kmm_from_buf]
        if not dfg.kmd_moves_pending:
            dead = dfg.kmd_deadlist
            while dead:
                sp = dead.popleft()
                if sp.flags & KMEM_SLAB_MOVE_PENDING:
                    dead.append(sp)
                    break
                dfg.kmd_deadcount -= 1
                cp.cache_slab_destroy += 1
                yield from lock.unlock(t)
                yield from self.kmem_slab_destroy(t, cp, sp)
                self.kmem_move_stats["kms_dead_slabs_freed"] += 1
                yield from lock.lock(t)
        yield from lock.unlock(t)
        t.charge("kmalloc")

    # --- scanning -------------------------------------------------------------------------
    def _destroy_pending_source(self, t: Thread, cp: KmemCache, sp: KmemSlab) -> Gen:
        """The source slab emptied while cache_lock was dropped: it sits on the deadlist
        tail; take it off and destroy it here (L4675-4692). cache_lock held on entry and on
        return, dropped around the destroy."""
        dfg = cp.cache_defrag
        dfg.kmd_deadlist.remove(sp)
        dfg.kmd_deadcount -= 1
        cp.cache_slab_destroy += 1
        yield from cp.cache_lock.unlock(t)
        yield from self.kmem_slab_destroy(t, cp, sp)
        self.kmem_move_stats["kms_dead_slabs_freed"] += 1
        yield from cp.cache_lock.lock(t)

    def kmem_move_buffers(self, t: Thread, cp: KmemCache, max_scan: int, max_slabs: int,
                          flags: int) -> Gen:
        """kmem_move_buffers (L4574), on kmem_taskq with cache_lock held (dropped around each
        request): walk the partial tree back from the last slab, never reaching the first,
        scanning at most max_scan slabs and taking buffers from at most max_slabs candidates
        (both unlimited when desperate or 0); queue a move for every allocated buffer of a
        candidate. Returns the candidates processed, or -1 when the scan had to stop because
        the source slab changed under it."""
        stats = self.kmem_move_stats
        if self.tun["kmem_move_blocked"]:
            return 0
        if self.tun["kmem_move_fulltilt"]:
            max_slabs = 0
            flags |= KMM_DESPERATE
        if max_scan == 0 or flags & KMM_DESPERATE:
            max_scan = U64
        if max_slabs == 0 or flags & KMM_DESPERATE:
            max_slabs = U64
        tree = cp.partial
        lock = cp.cache_lock
        chunk = cp.chunksize
        sp = tree.last()
        i = s = 0
        while i < max_scan and s < max_slabs and sp is not tree.first():
            if self.kmem_slab_is_reclaimable(cp, sp, flags):
                s += 1
                j = b = 0
                while j < sp.chunks and b < sp.refcnt:
                    buf = sp.base + j * chunk
                    j += 1
                    if self.kmem_slab_allocated(t, cp, sp, buf) is None:
                        continue
                    b += 1
                    sp.flags |= KMEM_SLAB_MOVE_PENDING
                    refcnt = sp.refcnt
                    nomove = sp.flags & KMEM_SLAB_NOMOVE
                    yield from lock.unlock(t)
                    success = yield from self.kmem_move_begin(t, cp, sp, buf, flags)
                    yield from lock.lock(t)
                    sp.flags &= ~KMEM_SLAB_MOVE_PENDING
                    if sp.refcnt == 0:
                        yield from self._destroy_pending_source(t, cp, sp)
                        stats["kms_endscan_slab_destroyed"] += 1
                        return -1
                    if not success:
                        stats["kms_endscan_nomem"] += 1
                        return -1
                    if sp.is_all_used():
                        stats["kms_endscan_slab_all_used"] += 1
                        return -1
                    if sp.refcnt != refcnt:
                        stats["kms_endscan_refcnt_changed"] += 1
                        return -1
                    if sp.flags & KMEM_SLAB_NOMOVE != nomove:
                        stats["kms_endscan_nomove_changed"] += 1
                        return -1
                    if sp is tree.first():
                        stats["kms_endscan_freelist"] += 1
                        return s
            sp = tree.prev(sp)
            i += 1
        if sp is tree.first():
            stats["kms_endscan_freelist"] += 1
        return s

    def kmem_cache_defrag(self, t: Thread, cp: KmemCache) -> Gen:
        """kmem_cache_defrag (L4844), from kmem_cache_reap: with more than one partial slab,
        a desperate kmem_move_buffers over every partial slab."""
        lock = cp.cache_lock
        yield from lock.lock(t)
        n = len(cp.partial)
        if n > 1:
            yield from self.kmem_move_buffers(t, cp, n, 0, KMM_DESPERATE)
            self.kmem_move_stats["kms_defrags"] += 1
        yield from lock.unlock(t)

    def kmem_cache_frag_threshold(self, cp: KmemCache, nfree: int) -> bool:
        """kmem_cache_frag_threshold (L4862): more than one partial slab and
        nfree / buftotal > kmem_frag_numer / kmem_frag_denom."""
        if len(cp.partial) <= 1:
            return False
        return nfree * self.tun["kmem_frag_denom"] > cp.cache_buftotal * self.tun["kmem_frag_numer"]

    def kmem_cache_is_fragmented(self, t: Thread, cp: KmemCache) -> Gen:
        """kmem_cache_is_fragmented (L4877), cache_lock held: at least kmem_frag_minslabs
        slabs and free slab buffers above the threshold. If not, the full depot magazines
        outside the working set are counted too, and `doreap` says whether that would pass.
        Returns (fragmented, doreap)."""
        if (not self.tun["kmem_move_fulltilt"]
                and len(cp.complete) + len(cp.partial) < self.tun["kmem_frag_minslabs"]):
            return False, False
        nfree = cp.cache_bufslab
        fragmented = self.kmem_cache_frag_threshold(cp, nfree)
        doreap = False
        if not fragmented:
            lock = cp.cache_depot_lock
            yield from lock.lock(t)
            full = cp.cache_full
            reap = min(full.ml_reaplimit, full.ml_min, full.ml_total)
            yield from lock.unlock(t)
            nfree += reap * cp.cache_magtype.mt_magsize
            doreap = self.kmem_cache_frag_threshold(cp, nfree)
        return fragmented, doreap

    def kmem_cache_scan(self, t: Thread, cp: KmemCache) -> Gen:
        """kmem_cache_scan (L4916), queued by every update for movable caches: if fragmented,
        move buffers off one candidate slab among the last kmem_reclaim_scan_range, and every
        kmem_reclaim_scan_range fragmented scans lower the threshold when a candidate was
        always found or raise it when fewer than half were; if not fragmented, reset the
        threshold to 1/8. Then reap the depot if `doreap`."""
        if cp.destroyed:
            return
        lock = cp.cache_lock
        yield from lock.lock(t)
        fragmented, doreap = yield from self.kmem_cache_is_fragmented(t, cp)
        dfg = cp.cache_defrag
        if fragmented:
            scan_range = self.tun["kmem_reclaim_scan_range"]
            max_slabs = self.tun["kmem_reclaim_max_slabs"]
            found = yield from self.kmem_move_buffers(t, cp, scan_range, max_slabs, 0)
            # slabs_found is a size_t: ">= 0" always holds and -1 wraps (reproduced)
            dfg.kmd_slabs_sought = (dfg.kmd_slabs_sought + max_slabs) & U64
            dfg.kmd_slabs_found = (dfg.kmd_slabs_found + found) & U64
            dfg.kmd_scans += 1
            if dfg.kmd_scans >= scan_range:
                dfg.kmd_scans = 0
                if dfg.kmd_slabs_found == dfg.kmd_slabs_sought:
                    dfg.kmd_reclaim_numer = max(1, dfg.kmd_reclaim_numer - 1)
                elif (dfg.kmd_slabs_found * 2) & U64 < dfg.kmd_slabs_sought:
                    dfg.kmd_reclaim_numer = min(KMEM_VOID_FRACTION - 1,
                                                dfg.kmd_reclaim_numer + 1)
                dfg.kmd_slabs_sought = 0
                dfg.kmd_slabs_found = 0
        else:
            dfg.kmd_reclaim_numer = 1
        yield from lock.unlock(t)
        if doreap:
            self.kmem_move_stats["kms_scan_depot_ws_reaps"] += 1
            yield from self.kmem_depot_ws_reap(t, cp)

    # --- notification -----------------------------------------------------------------------
    def kmem_cache_move_notify(self, t: Thread, cp: KmemCache, buf: int) -> Gen:
        """kmem_cache_move_notify (L4827): the client says a move it refused is now possible;
        queue kmem_cache_move_notify_task on kmem_taskq."""
        self.kmem_move_stats["kms_notify"] += 1
        t.charge("kmalloc")
        yield from self.kmem_taskq.dispatch(t, self.kmem_cache_move_notify_task, cp, buf)

    def kmem_cache_move_notify_task(self, t: Thread, cp: KmemCache, buf: int) -> Gen:
        """kmem_cache_move_notify_task (L4763), on kmem_taskq: ignore a buffer no longer
        allocated; with several partial slabs, a slab marked NOMOVE or with LATER history is
        un-marked and a KMM_NOTIFY move is begun; with one, the slab is just un-marked."""
        t.charge("kmalloc")
        lock = cp.cache_lock
        yield from lock.lock(t)
        sp = self.kmem_slab_allocated(t, cp, None, buf)
        if sp is None:
            yield from lock.unlock(t)
            return
        if len(cp.partial) > 1:
            if not sp.flags & KMEM_SLAB_NOMOVE and sp.later_count == 0:
                yield from lock.unlock(t)
                return
            self.kmem_slab_move_yes(cp, sp, buf)
            sp.flags |= KMEM_SLAB_MOVE_PENDING
            yield from lock.unlock(t)
            yield from self.kmem_move_begin(t, cp, sp, buf, KMM_NOTIFY)
            yield from lock.lock(t)
            sp.flags &= ~KMEM_SLAB_MOVE_PENDING
            if sp.refcnt == 0:
                dfg = cp.cache_defrag
                dfg.kmd_deadlist.remove(sp)
                dfg.kmd_deadcount -= 1
                cp.cache_slab_destroy += 1
                yield from lock.unlock(t)
                yield from self.kmem_slab_destroy(t, cp, sp)
                self.kmem_move_stats["kms_dead_slabs_freed"] += 1
                return
        else:
            self.kmem_slab_move_yes(cp, sp, buf)
        yield from lock.unlock(t)
