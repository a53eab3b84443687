"""illumos kmem maintenance: the depot working set, magazine destruction, purge and enable,
contention-driven magazine resizing, hash rescaling, the 15-second kmem_update, kmem_reap()
under memory pressure and kmem_cache_reap_now.

Models kmem_depot_ws_update, kmem_depot_ws_reap, kmem_magazine_destroy,
kmem_cache_magazine_purge, kmem_cache_magazine_enable, kmem_cache_reap_now,
kmem_cache_magazine_resize, kmem_hash_rescale, kmem_cache_update, kmem_update,
kmem_update_timeout, kmem_reap, kmem_reap_common, kmem_reap_start, kmem_reap_done,
kmem_reap_timeout, kmem_cache_reap and the CPU_UNCONFIG branch of kmem_cpu_setup
(seeds/002, L2043-2159, L2610-2976, L3660-3672). A mixin of `SolarisPolicy`. Per-cache tasks
run on the single-threaded `kmem_taskq`; timeouts (callouts) run in a short-lived kernel
thread spawned when they fire. IRQs stay on throughout.

Deviations (also noted at the code):
- taskq_wait (kmem_cache_reap_now, kmem_cache_destroy) waits for a marker task dispatched
  behind the caller's own work, i.e. for the tasks queued before it, not for later ones.
- The hash table of a rescale is not taken from a vmem arena: one "kmalloc" is charged and it
  never fails (the kernel skips the rescale when VM_NOSLEEP fails); its bytes count as
  metadata.
- kmem_reap() has no `MUTEX_HELD(&kmem_cache_lock)` caller other than a thread holding the
  simulated kmem_cache_lock mutex, and its TQ_NOALLOC dispatch never fails.
"""

from __future__ import annotations

from policies.base import Gen
from policies.solaris.cache import KmemCache
from policies.solaris.magazine import Magazine
from policies.solaris.slab import KMEM_HASH_INITIAL, highbit
from simcore.cpu import Thread
from simcore.sched import ILLUMOS_MAXCLSYSPRI
from simcore.taskq import Taskq

INT_MAX = 0x7FFF_FFFF
U64 = (1 << 64) - 1


def int32(x: int) -> int:
    """(int) of a uint64 difference: its low 32 bits as a signed int."""
    x &= 0xFFFF_FFFF
    return x - (1 << 32) if x & 0x8000_0000 else x


class KmemMaintenance:
    """Maintenance paths of the illumos kmem policy (mixed into SolarisPolicy)."""

    def kmem_magazine_destroy(self, t: Thread, cp: KmemCache, mp: Magazine,
                              nrounds: int) -> Gen:
        """kmem_magazine_destroy (L2047): destruct each round and free it to the slab layer
        (cache_lock per buffer), then free the magazine to the current magazine type's
        cache. The rounds were moved to `in_transit` when the magazine left its list or CPU.
        No lock held."""
        dtor = cp.spec.dtor_cost
        for rnd in range(nrounds):
            if dtor:
                t.charge_ns(dtor)
            yield from self.kmem_slab_free(t, cp, mp.mag_round[rnd], True)
        yield from self.kmem_cache_free(t, cp.cache_magtype.mt_cache, mp.addr)

    # --- purge, enable, reap_now -------------------------------------------------------------
    def kmem_cache_magazine_purge(self, t: Thread, cp: KmemCache) -> Gen:
        """kmem_cache_magazine_purge (L2738): for each CPU under its cc_lock detach both
        magazines, set the counts to -1 and cc_magsize to 0 (magazines disabled), then destroy
        them with their real round counts; then the double ws_update and a ws_reap free every
        depot magazine. Runs on kmem_taskq (or in kmem_cache_destroy)."""
        flushed = 0
        for ccp in cp.cache_cpu:
            yield from self._cc_enter(t, ccp.cc_lock)
            mp, pmp = ccp.cc_loaded, ccp.cc_ploaded
            rounds, prounds = ccp.cc_rounds, ccp.cc_prounds
            ccp.cc_loaded = ccp.cc_ploaded = None
            ccp.cc_rounds = ccp.cc_prounds = -1
            ccp.cc_magsize = 0
            cp.in_transit += max(rounds, 0) + max(prounds, 0)
            ccp.cc_lock._release(t)
            if mp is not None:
                yield from self.kmem_magazine_destroy(t, cp, mp, rounds)
                flushed += rounds
            if pmp is not None:
                yield from self.kmem_magazine_destroy(t, cp, pmp, prounds)
                flushed += prounds
        depot_rounds = cp.cache_full.ml_total * cp.cache_magtype.mt_magsize
        yield from self.kmem_depot_ws_update(t, cp)
        yield from self.kmem_depot_ws_update(t, cp)
        yield from self.kmem_depot_ws_reap(t, cp)
        self.machine.metrics.event("flush", time=t.now, cache=cp.name, cpu_rounds=flushed,
                                   depot_rounds=depot_rounds, why="kmem_cache_magazine_purge")

    def kmem_cache_magazine_enable(self, t: Thread, cp: KmemCache) -> Gen:
        """kmem_cache_magazine_enable (L2784): every CPU's cc_magsize <- the current magazine
        type's size, under its cc_lock (nothing for KMF_NOMAGAZINE caches)."""
        if cp.nomagazine:
            return
        for ccp in cp.cache_cpu:
            yield from self._cc_enter(t, ccp.cc_lock)
            ccp.cc_magsize = cp.cache_magtype.mt_magsize
            ccp.cc_lock._release(t)

    def kmem_cache_reap_now(self, t: Thread, cp: KmemCache) -> Gen:
        """kmem_cache_reap_now (L2805): two ws_updates make the whole depot reapable; the
        ws_reap runs on kmem_taskq and the caller waits for it. CPU magazines are kept; no
        reclaim callback, no defrag."""
        yield from self.kmem_depot_ws_update(t, cp)
        yield from self.kmem_depot_ws_update(t, cp)
        yield from self.kmem_taskq.dispatch(t, self._ws_reap_task, cp)
        yield from self._taskq_wait(t, self.kmem_taskq)

    def _ws_reap_task(self, t: Thread, cp: KmemCache) -> Gen:
        freed = yield from self.kmem_depot_ws_reap(t, cp)
        self.machine.metrics.event("reap", time=t.now, cache=cp.name, magazines=freed,
                                   why="kmem_cache_reap_now")

    def _taskq_wait(self, t: Thread, tq: Taskq) -> Gen:
        """taskq_wait: sleep until the tasks queued so far have run (a marker task is
        dispatched behind them on the FIFO queue)."""
        ev = self.machine.env.event()

        def marker(_wt: Thread) -> Gen:
            ev.succeed()
            yield from ()

        yield from tq.dispatch(t, marker)
        yield from t.block(ev, ("taskq_wait", tq))

    # --- resize and rescale ---------------------------------------------------------------
    def kmem_cache_magazine_resize(self, t: Thread, cp: KmemCache) -> Gen:
        """kmem_cache_magazine_resize (L2829), on kmem_taskq: if the chunk size still allows
        it, purge, move one row up the magazine-type table under the depot lock, set
        contention_prev to contention + INT_MAX (so the next update cannot resize again), and
        re-enable the magazines. Magazines never shrink."""
        mtp = cp.cache_magtype
        if cp.chunksize >= mtp.mt_maxbuf:
            return
        yield from self.kmem_cache_magazine_purge(t, cp)
        lock = cp.cache_depot_lock
        yield from lock.lock(t)
        cp.magtype_index += 1
        cp.cache_magtype = self.kmem_magtype[cp.magtype_index]
        cp.cache_depot_contention_prev = (cp.cache_depot_contention + INT_MAX) & U64
        yield from lock.unlock(t)
        yield from self.kmem_cache_magazine_enable(t, cp)
        cp.resizes += 1
        self.machine.metrics.event("magazine_resize", time=t.now, cache=cp.name, old=mtp.mt_magsize,
                                   new=cp.cache_magtype.mt_magsize)

    def kmem_hash_rescale(self, t: Thread, cp: KmemCache) -> Gen:
        """kmem_hash_rescale (L2851), on kmem_taskq: resize the hash to about the buffer
        count (64 minimum) unless it is within a factor of two already; rehash under
        cache_lock."""
        new_size = max(KMEM_HASH_INITIAL, 1 << (highbit(3 * cp.cache_buftotal + 4) - 2))
        old_size = cp.hash.mask + 1
        if old_size >> 1 <= new_size <= old_size << 1:
            return
        t.charge("kmalloc")
        yield from cp.cache_lock.lock(t)
        moved = cp.hash.rescale(new_size)
        cp.cache_rescale += 1
        t.charge("list_op", moved)
        yield from cp.cache_lock.unlock(t)

    # --- the periodic update -------------------------------------------------------------
    def kmem_cache_update(self, t: Thread, cp: KmemCache) -> Gen:
        """kmem_cache_update (L2902), for every cache under kmem_cache_lock: hash check,
        ws_update, the depot-contention check (more than kmem_depot_contention failed
        try-locks since the last update, and the chunk size below the row's maxbuf), then
        TQ_NOSLEEP dispatches of rescale, resize and (movable caches) kmem_cache_scan."""
        yield from cp.cache_lock.lock(t)
        h = cp.hash
        need_hash_rescale = h is not None and (
            cp.cache_buftotal > h.mask << 1
            or (cp.cache_buftotal < h.mask >> 1 and h.mask > KMEM_HASH_INITIAL))
        yield from cp.cache_lock.unlock(t)
        yield from self.kmem_depot_ws_update(t, cp)
        lock = cp.cache_depot_lock
        yield from lock.lock(t)
        need_magazine_resize = (
            cp.chunksize < cp.cache_magtype.mt_maxbuf
            and int32(cp.cache_depot_contention - cp.cache_depot_contention_prev)
            > self.tun["kmem_depot_contention"])
        cp.cache_depot_contention_prev = cp.cache_depot_contention
        failed = cp.cache_depot_contention - self._contention_seen.get(cp.name, 0)
        if failed:
            self.update_contention[cp.name] = failed
            self._contention_seen[cp.name] = cp.cache_depot_contention
        yield from lock.unlock(t)
        tq = self.kmem_taskq
        if need_hash_rescale:
            yield from tq.dispatch(t, self.kmem_hash_rescale, cp)
        if need_magazine_resize:
            yield from tq.dispatch(t, self.kmem_cache_magazine_resize, cp)
        if cp.cache_defrag is not None:
            yield from tq.dispatch(t, self.kmem_cache_scan, cp)

    def kmem_update(self, t: Thread) -> Gen:
        """kmem_update (L2965), a callout: kmem_cache_update for every cache while holding
        kmem_cache_lock, then kmem_update_timeout is queued on kmem_taskq so that the next
        update is armed only after this pass's tasks have run (self-throttling)."""
        self.kmem_updates += 1
        self.update_contention = {}
        yield from self.kmem_cache_lock.lock(t)
        for cp in list(self.kmem_caches):
            yield from self.kmem_cache_update(t, cp)
        yield from self.kmem_cache_lock.unlock(t)
        # not in the seed: one event per pass with each cache's failed depot try-locks since
        # the previous pass, for the scenarios (the figure the resize rule compares, except
        # in the pass after a resize, which the seed's contention_prev + INT_MAX disarms)
        self.machine.metrics.event("kmem_update", time=t.now, contention=self.update_contention)
        yield from self.kmem_taskq.dispatch(t, self.kmem_update_timeout)

    def kmem_update_timeout(self, t: Thread) -> Gen:
        """kmem_update_timeout (L2957): arm kmem_update kmem_reap_interval from now."""
        yield from t.sync()
        self._timeout(self.kmem_update, self.reap_interval, "callout/kmem_update")

    def _timeout(self, func, delay: int, name: str) -> None:  # type: ignore[no-untyped-def]
        """timeout(9F): run `func(t)` in a new callout thread (SYS class, maxclsyspri) `delay`
        ns from now."""
        m = self.machine
        m.env.timeout(delay).callbacks.append(
            lambda _ev: m.spawn(name, func, pri=ILLUMOS_MAXCLSYSPRI))

    # --- kmem_reap ------------------------------------------------------------------------
    def kmem_reap(self, t: Thread) -> Gen:
        """kmem_reap (L2714): kmem_reap_common on the kmem_reaping flag. Called under memory
        pressure (the registered shrinker, a failed slab allocation, or a workload)."""
        yield from self.kmem_reap_common(t, "kmem_reaping")

    def kmem_reap_idspace(self, t: Thread) -> Gen:
        """kmem_reap_idspace (L2727): the same on the kmem_reaping_idspace flag, reaping only
        caches of identifier arenas (KMC_IDENTIFIER), as vmem does when one runs dry."""
        yield from self.kmem_reap_common(t, "kmem_reaping_idspace")

    def kmem_reap_common(self, t: Thread, flag: str) -> Gen:
        """kmem_reap_common (L2692-2708): unless the caller holds kmem_cache_lock or the flag
        is already set (a pass in progress or cooling down), set it and queue
        kmem_reap_start on kmem_taskq."""
        if self.kmem_cache_lock.owner is t or self.reaping[flag]:
            return
        self.reaping[flag] = True
        yield from self.kmem_taskq.dispatch(t, self.kmem_reap_start, flag)

    def kmem_reap_start(self, t: Thread, flag: str) -> Gen:
        """kmem_reap_start (L2666), on kmem_taskq: kmem_cache_applyall (or _applyall_id for
        the idspace flag) dispatches one kmem_cache_reap per cache while holding
        kmem_cache_lock (L1204-1235), then kmem_reap_done behind them."""
        self.kmem_reap_passes += 1
        ident = flag == "kmem_reaping_idspace"
        yield from self.kmem_cache_lock.lock(t)
        caches = [cp for cp in self.kmem_caches
                  if not ident or "KMC_IDENTIFIER" in cp.cflags]
        self.machine.metrics.event("reap", time=t.now, why=flag, caches=len(caches))
        for cp in caches:
            yield from self.kmem_taskq.dispatch(t, self.kmem_cache_reap, cp)
        yield from self.kmem_cache_lock.unlock(t)
        yield from self.kmem_taskq.dispatch(t, self.kmem_reap_done, flag)

    def kmem_reap_done(self, t: Thread, flag: str) -> Gen:
        """kmem_reap_done (L2660): clear the flag kmem_reap_interval after the pass finished
        (kmem_reap_timeout, L2651)."""
        yield from t.sync()

        def kmem_reap_timeout(_ev: object) -> None:
            self.reaping[flag] = False

        self.machine.env.timeout(self.reap_interval).callbacks.append(kmem_reap_timeout)

    def kmem_cache_reap(self, t: Thread, cp: KmemCache) -> Gen:
        """kmem_cache_reap (L2614), on kmem_taskq: the client's reclaim callback (magazines it
        fills count as outside the working set), the working-set reap of the depot, then
        desperate defragmentation of a movable cache unless kmem_move_noreap."""
        if cp.destroyed:
            return
        cp.reaps += 1
        if cp.cache_reclaim is not None:
            before = cp.cache_full.ml_total
            yield from cp.cache_reclaim(t)
            delta = cp.cache_full.ml_total - before
            if delta > 0:
                lock = cp.cache_depot_lock
                yield from lock.lock(t)
                cp.cache_full.ml_reaplimit += delta
                cp.cache_full.ml_min += delta
                yield from lock.unlock(t)
        freed = yield from self.kmem_depot_ws_reap(t, cp)
        self.machine.metrics.event("reap", time=t.now, cache=cp.name, magazines=freed,
                                   why="kmem_cache_reap")
        if cp.cache_defrag is not None and not self.tun["kmem_move_noreap"]:
            yield from self.kmem_cache_defrag(t, cp)

    def kmem_cpu_unconfig(self, t: Thread) -> Gen:
        """kmem_cpu_setup(CPU_UNCONFIG) (L3662): queue a purge of every cache, then a
        re-enable of every cache's magazines, on kmem_taskq, each kmem_cache_applyall holding
        kmem_cache_lock while it dispatches (the caller does not wait for the tasks). A CPU
        that only goes offline (CPU_OFF) never gets here: it keeps its magazines."""
        for func in (self.kmem_cache_magazine_purge, self.kmem_cache_magazine_enable):
            yield from self.kmem_cache_lock.lock(t)
            for cp in list(self.kmem_caches):
                yield from self.kmem_taskq.dispatch(t, func, cp)
            yield from self.kmem_cache_lock.unlock(t)
