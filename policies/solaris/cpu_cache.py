"""The illumos kmem CPU layer (seed 002 kmem.c): kmem_cache_alloc / kmem_cache_free on the
per-CPU loaded and previous magazines under cc_lock, with the local fast path for a hit that no
other CPU can observe."""

from __future__ import annotations

from policies.base import Gen
from policies.solaris.cache import KmemCache
from policies.solaris.magazine import (
    KmemCpuCache,
    Magazine,
    kmem_cpu_reload,
)
from simcore.cpu import Thread
from simcore.flags import KM_NOSLEEP
from simcore.mutex import AdaptiveMutex

KMEM_CPU_CACHE_SIZE = 64
"""Bytes of one padded kmem_cpu_cache_t."""


def _cc_enter_local(t: Thread, lock: AdaptiveMutex) -> bool:
    """mutex_enter(&ccp->cc_lock) charged to the local clock when the lock is free, unwanted
    and released no later than t.now (policies.solaris.policy, "The per-CPU fast path"):
    True, the lock is held; False, nothing done (the caller takes it with `lock.lock`).
    SpinLock._take's bookkeeping with its charge inlined, the usual case (the line is this
    CPU's already, so last_cpu / last_node stay as they are) tested first."""
    pending = t.pending
    acquired = t.env._now + pending
    if lock.owner is not None or lock.waiters or lock.free_at > acquired:
        return False
    st = lock.stat
    st.acquisitions += 1
    cpu = t.cpu
    last = lock.last_cpu
    if last == cpu.id:
        ns = t._costs["lock_acquire"]
    else:
        if last < 0:
            ns = t._costs["lock_acquire"]
        else:
            st.acq_bounces += 1
            ns = t._costs["cacheline_remote_node" if lock.last_node != cpu.node
                          else "cacheline_transfer"]
        lock.last_cpu = cpu.id
        lock.last_node = cpu.node
    t.pending = pending + ns  # Thread.charge, inlined
    if not t._batched and ns:
        t._steps.append(ns)
    lock.owner = t
    lock.owner_in_irq = t.in_irq > 0
    lock.acquired_at = acquired
    lock._counted = True  # an adaptive mutex holder stays preemptible (AdaptiveMutex._take)
    t.held.append(lock)
    return True


class KmemCpuLayer:
    """CPU-layer paths of SolarisPolicy."""

    # --- the CPU layer ------------------------------------------------------------------------
    def _cc_enter(self, t: Thread, lock: AdaptiveMutex) -> Gen:
        """mutex_enter(&ccp->cc_lock): local when nobody else can hold it, else the lock (the
        hot paths write the two steps out: one generator less)."""
        if not _cc_enter_local(t, lock):
            yield from lock.lock(t)

    def _alloc_hit(self, t: Thread, cp: KmemCache, _kmflag: int = 0) -> int | None:
        """kmem_cache_alloc's A1/A2 with cc_lock free: pop the loaded magazine, first swapping
        in a full previous one (kmem_cpu_reload). No event; None (nothing charged) when the
        CPU has no round or the lock is not free. When the lock's line is already this CPU's
        (no bounce) and nothing traces, the hit's costs are constants: one charge, and the
        lock_stat acquisition and hold, the latency, cc_alloc and the cache's objects in use
        are counted (fold_hits; KmemCache.inuse adds them). The lock's `acquired_at` is only
        read while it is held, so the counted round trip sets `free_at` alone."""
        cpu = t.cpu
        ccp = cp.cache_cpu[cpu.id]
        rounds = ccp.cc_rounds
        if rounds <= 0 and ccp.cc_prounds <= 0:
            return None
        lock = ccp.cc_lock
        pending = t.pending
        now = t.env._now + pending
        if lock.owner is not None or lock.waiters or lock.free_at > now:
            return None
        if lock.last_cpu != cpu.id or t._tracer is not None:
            return self._alloc_hit_recorded(t, cp, ccp, lock)
        if rounds > 0:
            release, ns = self._hit_alloc_ns
            ccp.hit_alloc += 1
        else:
            # kmem_cpu_reload(ccp, ccp->cc_ploaded, ccp->cc_prounds), inlined
            ccp.cc_loaded, ccp.cc_ploaded, rounds, ccp.cc_prounds = (ccp.cc_ploaded, ccp.cc_loaded,
                                                                     ccp.cc_prounds, rounds)
            release, ns = self._hit_alloc_reload_ns
            ccp.hit_alloc_reload += 1
        rounds -= 1
        ccp.cc_rounds = rounds
        lock.free_at = now + release
        t.pending = pending + ns
        if not t._batched:
            t._steps.append(ns)
        return ccp.cc_loaded.mag_round[rounds]

    def _alloc_hit_recorded(self, t: Thread, cp: KmemCache, ccp: KmemCpuCache,
                            lock: AdaptiveMutex) -> int:
        """`_alloc_hit` with every charge and statistic recorded as it happens (the lock's
        line comes from another CPU, or a trace records the spans)."""
        start = t.now
        t.charge("call")
        _cc_enter_local(t, lock)  # free: the caller checked
        if ccp.cc_rounds <= 0:
            kmem_cpu_reload(ccp, ccp.cc_ploaded, ccp.cc_prounds)
            t.charge("object_move")
        ccp.cc_rounds -= 1
        buf = ccp.cc_loaded.mag_round[ccp.cc_rounds]
        t.charge("magazine_pop")
        ccp.cc_alloc += 1
        cp.inuse_base += 1
        lock._release(t)
        if cp.record:
            self._tally["alloc.hit"][t.env._now + t.pending - start] += 1
        return buf

    def _free_hit(self, t: Thread, cp: KmemCache, buf: int) -> bool:
        """kmem_cache_free's F1/F2 with cc_lock free: push onto the loaded magazine, first
        swapping in an empty previous one. No event; False (nothing charged) otherwise. Counted
        like `_alloc_hit` when the lock's line is this CPU's and nothing traces."""
        cpu = t.cpu
        ccp = cp.cache_cpu[cpu.id]
        rounds = ccp.cc_rounds
        ms = ccp.cc_magsize
        if 0 <= rounds < ms:
            reload = False
        elif ms and ccp.cc_prounds == 0:
            reload = True
        else:
            return False
        lock = ccp.cc_lock
        pending = t.pending
        now = t.env._now + pending
        if lock.owner is not None or lock.waiters or lock.free_at > now:
            return False
        if lock.last_cpu != cpu.id or t._tracer is not None:
            return self._free_hit_recorded(t, cp, ccp, lock, buf)
        if reload:
            # kmem_cpu_reload(ccp, ccp->cc_ploaded, 0), inlined
            ccp.cc_loaded, ccp.cc_ploaded, ccp.cc_prounds = ccp.cc_ploaded, ccp.cc_loaded, rounds
            rounds = 0
            release, ns = self._hit_free_reload_ns
            ccp.hit_free_reload += 1
        else:
            release, ns = self._hit_free_ns
            ccp.hit_free += 1
        ccp.cc_loaded.mag_round[rounds] = buf
        ccp.cc_rounds = rounds + 1
        lock.free_at = now + release
        t.pending = pending + ns
        if not t._batched:
            t._steps.append(ns)
        return True

    def _free_hit_recorded(self, t: Thread, cp: KmemCache, ccp: KmemCpuCache, lock: AdaptiveMutex,
                           buf: int) -> bool:
        """`_free_hit` with every charge and statistic recorded as it happens."""
        ms = ccp.cc_magsize
        start = t.now
        t.charge("call")
        _cc_enter_local(t, lock)  # free: the caller checked
        if not 0 <= ccp.cc_rounds < ms:
            kmem_cpu_reload(ccp, ccp.cc_ploaded, 0)
            t.charge("object_move")
        ccp.cc_loaded.mag_round[ccp.cc_rounds] = buf
        ccp.cc_rounds += 1
        t.charge("magazine_push")
        ccp.cc_free += 1
        cp.inuse_base -= 1
        lock._release(t)
        if cp.record:
            self._tally["free.hit"][t.env._now + t.pending - start] += 1
        return True

    def cc_hit_costs(self) -> list[tuple[int, int, int]]:
        """(until the release, total, hold) ns of the four counted hits (alloc, alloc with
        reload, free, free with reload): call, mutex_enter with the line local, the pop or
        push (plus kmem_cpu_reload's object_move) held, then mutex_exit."""
        c = self.machine.costs
        out = []
        for op in ("magazine_pop", "magazine_push"):
            for reload in (0, 1):
                hold = c["lock_acquire"] + c[op] + reload * c["object_move"]
                release = c["call"] + hold
                out.append((release, release + c["lock_release"], hold))
        return out

    def fold_hits(self) -> None:
        """Record the counted hits (Metrics.fold): cc_lock's acquisitions and holds in
        lock_stat and its hold histogram, cc_alloc / cc_free, the alloc.hit / free.hit
        latencies and the objects in use (inuse_base)."""
        costs = self._cc_hit_ns
        h_alloc, h_free = self._h["alloc.hit"], self._h["free.hit"]
        for cp in self.kmem_caches:
            for ccp in cp.cache_cpu:
                hits = (ccp.hit_alloc, ccp.hit_alloc_reload, ccp.hit_free, ccp.hit_free_reload)
                if not any(hits):
                    continue
                lock = ccp.cc_lock
                for kind, n in enumerate(hits):
                    if n:
                        _release, ns, hold = costs[kind]
                        lock.stat.acquisitions += n
                        lock.stat.record_holds(hold, n)
                        lock.hold_hist.record(hold, n)
                        if kind < 2:
                            ccp.cc_alloc += n
                        else:
                            ccp.cc_free += n
                        if cp.record:
                            (h_alloc if kind < 2 else h_free).record(ns, n)
                cp.inuse_base += hits[0] + hits[1] - hits[2] - hits[3]
                ccp.hit_alloc = ccp.hit_alloc_reload = ccp.hit_free = ccp.hit_free_reload = 0

    def kmem_cache_alloc(self, t: Thread, cp: KmemCache, kmflag: int) -> Gen:
        """kmem_cache_alloc (L2178), cc_lock held around the magazine loop: A1 pop the loaded
        magazine; A2 swap in a full previous one; A3 magazines disabled -> slab layer; A4 take
        a full magazine from the depot (returning an empty previous one to the empty list) and
        retry; no full magazine -> slab layer. A slab-layer buffer is constructed. Magazines
        are never allocated or filled here. Returns the buffer or None (KM_NOSLEEP failure).

        Written out for the miss (the path every depot exchange takes): the local hit is only
        tried when a magazine has a round; kmem_depot_alloc (L2084) and kmem_depot_free
        (L2116) are inlined at their call sites in A4, step for step as in depot.py (the
        depot lock's try-enter, and on failure the enter and cache_depot_contention; the head
        magazine off cache_full with ml_total / ml_min / ml_alloc; the previous magazine onto
        cache_empty); the charges of one local run are summed (A4's kmem_cpu_reload object_move with the
        pop that follows it: the loop's next pass pops the full magazine) and the latency is
        tallied."""
        ccp = cp.cache_cpu[t.cpu.id]
        if ccp.cc_rounds > 0 or ccp.cc_prounds > 0:
            buf = self._alloc_hit(t, cp)
            if buf is not None:
                return buf
        pending = t.pending
        start = t.env._now + pending
        ns = self._call_ns
        t.pending = pending + ns  # t.charge("call"), inlined
        if not t._batched and ns:
            t._steps.append(ns)
        lock = ccp.cc_lock
        if not _cc_enter_local(t, lock):
            yield from lock.lock(t)
        path = "alloc.hit"
        moved = 0
        while True:
            rounds = ccp.cc_rounds
            if rounds > 0:
                rounds -= 1
                ccp.cc_rounds = rounds
                buf = ccp.cc_loaded.mag_round[rounds]
                ns = moved + self._pop_ns  # object_move (if reloaded), magazine_pop
                t.pending += ns
                if not t._batched and ns:
                    t._steps.append(ns)
                ccp.cc_alloc += 1
                cp.inuse_base += 1
                lock._release(t)
                if cp.record:
                    self._tally[path][t.env._now + t.pending - start] += 1
                return buf
            if ccp.cc_prounds > 0:
                kmem_cpu_reload(ccp, ccp.cc_ploaded, ccp.cc_prounds)
                t.charge("object_move")
                continue
            magsize = ccp.cc_magsize
            if magsize == 0:
                break
            # fmp = kmem_depot_alloc(cp, &cp->cache_full)
            dlock = cp.cache_depot_lock
            if (yield from dlock.tryenter_or_enter(t)):
                cp.cache_depot_contention += 1
            mlp = cp.cache_full
            if not mlp.ml_list:
                yield from dlock.unlock(t)
                break
            fmp = mlp.ml_list.pop()
            mlp.ml_total -= 1
            if mlp.ml_total < mlp.ml_min:
                mlp.ml_min = mlp.ml_total
            mlp.ml_alloc += 1
            ns = self._list_op_ns
            t.pending += ns
            if not t._batched and ns:
                t._steps.append(ns)
            cp.in_transit += cp.cache_magtype.mt_magsize  # until installed
            cp.cc_transit += cp.cache_magtype.mt_magsize
            yield from dlock.unlock(t)
            mp = ccp.cc_ploaded
            if mp is not None:
                # kmem_depot_free(cp, &cp->cache_empty, ccp->cc_ploaded). The previous
                # magazine leaves the CPU first (the seed frees it, then kmem_cpu_reload
                # overwrites cc_ploaded, under cc_lock): no instant shows it both on the CPU
                # and in the depot.
                ccp.cc_ploaded, ccp.cc_prounds = None, -1
                yield from dlock.lock(t)
                mlp = cp.cache_empty
                mlp.ml_list.append(mp)
                mlp.ml_total += 1
                ns = self._list_op_ns
                t.pending += ns
                if not t._batched and ns:
                    t._steps.append(ns)
                yield from dlock.unlock(t)
            # kmem_cpu_reload(ccp, fmp, ccp->cc_magsize), inlined
            ccp.cc_ploaded, ccp.cc_prounds = ccp.cc_loaded, ccp.cc_rounds
            ccp.cc_loaded, ccp.cc_rounds = fmp, magsize
            cp.in_transit -= magsize
            cp.cc_transit -= magsize
            moved = self._object_move_ns
            path = "alloc.refill"
        lock._release(t)
        buf = yield from self.kmem_slab_alloc(t, cp, kmflag)
        if buf is None:
            return None
        if cp.spec.ctor_cost:
            t.charge_ns(cp.spec.ctor_cost)
        if cp.record:
            self._tally["alloc.grow"][t.env._now + t.pending - start] += 1
        return buf

    def kmem_cache_free(self, t: Thread, cp: KmemCache, buf: int) -> Gen:
        """kmem_cache_free (L2315), cc_lock held around the magazine loop: F1 push onto the
        loaded magazine; F2 swap in an empty previous one; F3 magazines disabled -> slab
        layer; F4 take an empty magazine from the depot (pushing a full previous one to the
        full list) and retry; F5 none: drop cc_lock, allocate a magazine KM_NOSLEEP from the
        current type's cache, re-take cc_lock, discard it if the size changed meanwhile, else
        push it on the empty list and retry; no magazine -> destruct and free to the slab.

        Written out for the miss like `kmem_cache_alloc`: the local hit is only tried when
        the loaded magazine has room or the previous one is empty; F4's kmem_depot_alloc
        (L2084) of an empty magazine and kmem_depot_free (L2116) of the full previous one
        are inlined, step for step as in depot.py; F4's object_move is charged with the push
        that follows it; the latency is tallied."""
        ccp = cp.cache_cpu[t.cpu.id]
        rounds = ccp.cc_rounds
        ms = ccp.cc_magsize
        if (0 <= rounds < ms or (ms and ccp.cc_prounds == 0)) and self._free_hit(t, cp, buf):
            return
        pending = t.pending
        start = t.env._now + pending
        ns = self._call_ns
        t.pending = pending + ns  # t.charge("call"), inlined
        if not t._batched and ns:
            t._steps.append(ns)
        lock = ccp.cc_lock
        if not _cc_enter_local(t, lock):
            yield from lock.lock(t)
        path = "free.hit"
        moved = 0
        while True:
            ms = ccp.cc_magsize
            rounds = ccp.cc_rounds
            if 0 <= rounds < ms:
                ccp.cc_loaded.mag_round[rounds] = buf
                ccp.cc_rounds = rounds + 1
                ns = moved + self._push_ns  # object_move (after F4), magazine_push
                t.pending += ns
                if not t._batched and ns:
                    t._steps.append(ns)
                ccp.cc_free += 1
                cp.inuse_base -= 1
                lock._release(t)
                if cp.record:
                    self._tally[path][t.env._now + t.pending - start] += 1
                return
            if ccp.cc_prounds == 0:
                kmem_cpu_reload(ccp, ccp.cc_ploaded, 0)
                t.charge("object_move")
                continue
            if ms == 0:
                break
            path = "free.flush"
            # emp = kmem_depot_alloc(cp, &cp->cache_empty)
            dlock = cp.cache_depot_lock
            if (yield from dlock.tryenter_or_enter(t)):
                cp.cache_depot_contention += 1
            mlp = cp.cache_empty
            if mlp.ml_list:
                emp = mlp.ml_list.pop()
                mlp.ml_total -= 1
                if mlp.ml_total < mlp.ml_min:
                    mlp.ml_min = mlp.ml_total
                mlp.ml_alloc += 1
                ns = self._list_op_ns
                t.pending += ns
                if not t._batched and ns:
                    t._steps.append(ns)
                yield from dlock.unlock(t)
                mp = ccp.cc_ploaded
                if mp is not None:
                    # kmem_depot_free(cp, &cp->cache_full, ccp->cc_ploaded): the previous
                    # magazine leaves the CPU first (see kmem_cache_alloc), its rounds in
                    # transit until it is on the full list
                    n = ccp.cc_prounds
                    cp.in_transit += n
                    cp.cc_transit += n
                    ccp.cc_ploaded, ccp.cc_prounds = None, -1
                    yield from dlock.lock(t)
                    mlp = cp.cache_full
                    mlp.ml_list.append(mp)
                    mlp.ml_total += 1
                    cp.in_transit -= n
                    cp.cc_transit -= n
                    ns = self._list_op_ns
                    t.pending += ns
                    if not t._batched and ns:
                        t._steps.append(ns)
                    yield from dlock.unlock(t)
                # kmem_cpu_reload(ccp, emp, 0), inlined
                ccp.cc_ploaded, ccp.cc_prounds = ccp.cc_loaded, ccp.cc_rounds
                ccp.cc_loaded, ccp.cc_rounds = emp, 0
                moved = self._object_move_ns
                continue
            yield from dlock.unlock(t)
            mtp = cp.cache_magtype
            lock._release(t)
            maddr = yield from self.kmem_cache_alloc(t, mtp.mt_cache, KM_NOSLEEP)
            yield from self._cc_enter(t, lock)
            if maddr is None:
                break
            if ccp.cc_magsize != mtp.mt_magsize:
                lock._release(t)
                yield from self.kmem_cache_free(t, mtp.mt_cache, maddr)
                yield from self._cc_enter(t, lock)
                continue
            mp = Magazine(maddr, [0] * mtp.mt_magsize)
            yield from self.kmem_depot_free(t, cp, cp.cache_empty, mp)
        lock._release(t)
        yield from self.kmem_slab_free_constructed(t, cp, buf, False)
        if cp.record:
            self._tally["free.flush"][t.env._now + t.pending - start] += 1
