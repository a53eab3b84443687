"""Linux SLAB retuning at run time (seed 003 mm/slab.c slabinfo_write 3966-4009,
do_tune_cpucache 3553-3595, alloc_kmemlist 3455-3530; seed 004 __do_tune_cpucache): what a
write of `name limit batchcount shared` to /proc/slabinfo does.

- slabinfo_write: under cache_chain_mutex; values with limit < 1, batchcount < 1,
  batchcount > limit or shared < 0 do nothing (the experiment file rejects them instead).
- do_tune_cpucache (2.6.17): a new array per online CPU (kmalloc), swapped in on every CPU by
  do_ccupdate_local through on_each_cpu (an IPI, IRQs off), then the tunables set, each old
  array emptied with free_block under its node's list_lock and freed; patch 004 allocates one
  percpu area for every possible CPU, swaps the pointer and waits in kick_all_cpus_sync
  (also an IPI to every CPU), then frees the old one the same way.
- alloc_kmemlist: per node a new shared array (shared x batchcount) replacing the old one,
  whose objects go to free_block; the alien arrays are kept; free_limit =
  (1 + nr_cpus_node) x batchcount + num.
"""

from __future__ import annotations

from policies.base import Gen
from policies.linux_slab.geometry import CpuCacheTunables
from policies.linux_slab.structs import ArrayCache, LinuxCache
from simcore.cpu import Thread


class SlabTune:
    """do_tune_cpucache of LinuxSlabPolicy."""

    retune_keys = ("limit", "batchcount", "shared")

    def retune(self, t: Thread, c: LinuxCache, values: dict[str, int]) -> Gen:
        """slabinfo_write: `limit batchcount shared` for cache `c`."""
        limit, batch, shared = values["limit"], values["batchcount"], values["shared"]
        yield from self.cache_chain_mutex.lock(t)
        if c in self.cache_chain and not (limit < 1 or batch < 1 or batch > limit
                                          or shared < 0):
            yield from self.do_tune_cpucache(t, c, limit, batch, shared)
        yield from self.cache_chain_mutex.unlock(t)

    def do_tune_cpucache(self, t: Thread, c: LinuxCache, limit: int, batch: int,
                         shared: int) -> Gen:
        """do_tune_cpucache (cache_chain_mutex held): new arrays swapped in by IPI, old ones
        drained into the slabs, then alloc_kmemlist."""
        m = self.machine
        online = [cpu.id for cpu in m.cpus if self.cpu_is_online[cpu.id]]
        new = {cpu: ArrayCache(limit, batch) for cpu in online}
        t.charge("kmalloc", len(online) if not self.tun["percpu_cpu_cache"] else 1)
        old: dict[int, ArrayCache | None] = {}

        def ccupdate(h: Thread) -> Gen:
            cpu = h.cpu.id
            self.fold_hits()  # the hits the old array counted
            old[cpu] = c.array[cpu]
            c.array[cpu] = new[cpu]
            if old[cpu] is not None:
                c.retiring.append(old[cpu])
            h.charge("list_op")
            yield from ()

        yield from self.on_each_cpu(t, ccupdate, "do_ccupdate_local")
        c.tun = CpuCacheTunables(limit, batch, shared)
        for cpu in online:
            ac = old.get(cpu)
            if ac is None:
                continue
            l3 = c.nodelists[m.cpus[cpu].node]
            irqf = yield from l3.list_lock.lock_irqsave(t)
            victims = self.free_block(t, c, list(ac.entry), l3.node)
            ac.entry.clear()
            c.retiring.remove(ac)
            yield from l3.list_lock.unlock_irqrestore(t, irqf)
            yield from self._destroy_after_unlock(t, c, victims)
        yield from self.alloc_kmemlist(t, c)
        m.metrics.event("tune_cpucache", cache=c.name, cpu=t.cpu.id, limit=limit,
                        batchcount=batch, shared=shared)

    def alloc_kmemlist(self, t: Thread, c: LinuxCache) -> Gen:
        """alloc_kmemlist for existing nodes: new shared array, old shared objects to
        free_block, free_limit recomputed."""
        for l3 in c.nodelists:
            new_shared = ArrayCache(c.shared * c.batchcount, 0xBAADF00D) if c.shared else None
            t.charge("kmalloc")
            irqf = yield from l3.list_lock.lock_irqsave(t)
            victims = []
            if l3.shared is not None:
                victims = self.free_block(t, c, list(l3.shared.entry), l3.node)
                l3.shared.entry.clear()
            l3.shared = new_shared
            l3.free_limit = (1 + self.nr_cpus_node(l3.node)) * c.batchcount + c.geo.num
            yield from l3.list_lock.unlock_irqrestore(t, irqf)
            yield from self._destroy_after_unlock(t, c, victims)
