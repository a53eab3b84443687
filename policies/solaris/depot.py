"""The illumos kmem depot (seed 002 kmem.c): the full and empty magazine lists under
cache_depot_lock, kmem_depot_alloc with its try-lock contention count, kmem_depot_free, and the
working-set bookkeeping kmem_depot_ws_update / kmem_depot_ws_reap."""

from __future__ import annotations

from policies.base import Gen
from policies.solaris.cache import KmemCache
from policies.solaris.magazine import (
    KmemMaglist,
    Magazine,
)
from simcore.cpu import Thread


class KmemDepot:
    """Depot paths of SolarisPolicy."""

    def kmem_depot_alloc(self, t: Thread, cp: KmemCache, mlp: KmemMaglist) -> Gen:
        """kmem_depot_alloc (L2084): try the depot lock, and only if that fails take it and
        count cache_depot_contention; pop the list's head magazine (LIFO), lowering ml_min and
        counting ml_alloc. A full magazine's rounds are in transit until installed or
        destroyed. Returns the magazine or None. (The CPU layer's miss paths, A4 and F4 of
        kmem_cache_alloc / kmem_cache_free, carry this function inlined: keep them alike.)"""
        lock = cp.cache_depot_lock
        if (yield from lock.tryenter_or_enter(t)):
            cp.cache_depot_contention += 1
        mp = None
        if mlp.ml_list:
            mp = mlp.ml_list.pop()
            mlp.ml_total -= 1
            if mlp.ml_total < mlp.ml_min:
                mlp.ml_min = mlp.ml_total
            mlp.ml_alloc += 1
            t.charge("list_op")
            if mlp is cp.cache_full:
                cp.in_transit += cp.cache_magtype.mt_magsize
        yield from lock.unlock(t)
        return mp

    def kmem_depot_free(self, t: Thread, cp: KmemCache, mlp: KmemMaglist, mp: Magazine,
                        transit: int = 0) -> Gen:
        """kmem_depot_free (L2116): push a magazine on a depot list under the depot lock (a
        plain mutex_enter: never counted as contention). `transit`: the magazine's rounds
        the caller counted in transit, which are in the depot from here on. (Inlined in A4
        and F4 of kmem_cache_alloc / kmem_cache_free: keep them alike.)"""
        lock = cp.cache_depot_lock
        yield from lock.lock(t)
        mlp.ml_list.append(mp)
        mlp.ml_total += 1
        cp.in_transit -= transit
        t.charge("list_op")
        yield from lock.unlock(t)


    # --- depot working set -----------------------------------------------------------------
    def kmem_depot_ws_update(self, t: Thread, cp: KmemCache) -> Gen:
        """kmem_depot_ws_update (L2130): reaplimit <- min, min <- total, for both lists,
        under the depot lock."""
        lock = cp.cache_depot_lock
        yield from lock.lock(t)
        for mlp in (cp.cache_full, cp.cache_empty):
            mlp.ml_reaplimit = mlp.ml_min
            mlp.ml_min = mlp.ml_total
        yield from lock.unlock(t)

    def kmem_depot_ws_reap(self, t: Thread, cp: KmemCache) -> Gen:
        """kmem_depot_ws_reap (L2144): destroy MIN(reaplimit, min) full magazines, then as
        many empty ones, popping with kmem_depot_alloc (which counts ml_alloc and may count
        contention). Runs on kmem_taskq (or in the caller of destroy); no lock held."""
        reap = min(cp.cache_full.ml_reaplimit, cp.cache_full.ml_min)
        freed = 0
        while reap > 0:
            reap -= 1
            mp = yield from self.kmem_depot_alloc(t, cp, cp.cache_full)
            if mp is None:
                break
            yield from self.kmem_magazine_destroy(t, cp, mp, cp.cache_magtype.mt_magsize)
            freed += 1
        reap = min(cp.cache_empty.ml_reaplimit, cp.cache_empty.ml_min)
        while reap > 0:
            reap -= 1
            mp = yield from self.kmem_depot_alloc(t, cp, cp.cache_empty)
            if mp is None:
                break
            yield from self.kmem_magazine_destroy(t, cp, mp, 0)
            freed += 1
        return freed

