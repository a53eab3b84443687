"""Linux SLAB and CPU hotplug (seed 003 mm/slab.c cpuup_callback 1082-1262; seed 004's
changes to it): what happens to a cache's per-CPU array, its node's free_limit, shared and
alien arrays and free slabs when a CPU goes down and comes back.

- CPU_DEAD (1190-1255): under cache_chain_mutex, for every cache: free_limit -= batchcount,
  the dead CPU's array emptied with free_block (2.6.17 then frees it: `array[cpu] = NULL`,
  kfree; with patch 004 the per-CPU array stays allocated and only `avail = 0`); when no
  other CPU of the node is online the shared array is emptied and freed and the alien arrays
  drained and freed. Then every cache's node is shrunk (__node_shrink: all free slabs).
- CPU_UP_PREPARE (1092-1175): free_limit = (1 + nr_cpus_node) x batchcount + num, counting
  the CPUs already online (the CPU coming up is not yet), then a new array for the CPU
  (2.6.17; patch 004 keeps the old one) and a shared / alien array for nodes without one.
- CPU_ONLINE (1176-1178): start_cpu_timer, which in 2.6.17 only initialises a reap_work whose
  func is NULL: a CPU that was online before gets no cache_reap again. 2.6.19 and later clear
  the func in CPU_DOWN_PREPARE (`reap_work_cancel_on_down`), so the reaper restarts.

Deliberate deviation: the dead CPU's cache_reap work stops at CPU_DEAD. In 2.6.17 keventd
hands the dead CPU's pending work to another CPU, where its re-arm finds that CPU's own
reap_work already pending; the model does not run that one extra pass.
"""

from __future__ import annotations

from policies.base import Gen
from policies.linux_slab.geometry import ALIEN_LIMIT
from policies.linux_slab.structs import ArrayCache, LinuxCache
from simcore.cpu import Thread
from simcore.sched import NICE_0
from simcore.spinlock import SpinLock
from simcore.timer import PeriodicWork


class SlabHotplug:
    """cpuup_callback of LinuxSlabPolicy."""

    def nr_cpus_node(self, node: int) -> int:
        """nr_cpus_node: online CPUs of `node`."""
        return sum(1 for cpu in self.machine.cpus_of_node(node) if self.cpu_is_online[cpu.id])

    def cpu_dead(self, t: Thread, cpu: int) -> Gen:
        """cpuup_callback(CPU_DEAD), run on another CPU after `cpu` has stopped."""
        m = self.machine
        node = m.cpus[cpu].node
        percpu = self.tun["percpu_cpu_cache"]
        if cpu < len(self.reapers):
            self.reapers[cpu].cancel()
        yield from self.cache_chain_mutex.lock(t)
        for c in list(self.cache_chain):
            nc = c.array[cpu]
            l3 = c.nodelists[node]
            irqf = yield from l3.list_lock.lock_irqsave(t)
            l3.free_limit -= c.batchcount
            victims = []
            if nc is not None:
                victims = self.free_block(t, c, list(nc.entry), node)
                nc.entry.clear()
            if not percpu:
                # the seed clears array[cpu] before taking the lock; nothing runs on the dead
                # CPU, so clearing it here only keeps the model's statistics exact meanwhile
                self.fold_hits()  # the hits the array counted
                c.array[cpu] = None
            if self.nr_cpus_node(node):
                yield from l3.list_lock.unlock_irqrestore(t, irqf)
                yield from self._destroy_after_unlock(t, c, victims)
                continue
            if l3.shared is not None:
                victims += self.free_block(t, c, list(l3.shared.entry), node)
                l3.shared.entry.clear()
                l3.shared = None
            alien, l3.alien = l3.alien, {}
            yield from l3.list_lock.unlock_irqrestore(t, irqf)
            yield from self._destroy_after_unlock(t, c, victims)
            for other, ac in alien.items():
                assert ac.lock is not None
                irqf = yield from ac.lock.lock_irqsave(t)
                yield from self.drain_alien_cache(t, c, ac, other)
                yield from ac.lock.unlock_irqrestore(t, irqf)
        for c in list(self.cache_chain):
            yield from self.node_shrink(t, c, c.nodelists[node])
        yield from self.cache_chain_mutex.unlock(t)
        m.metrics.event("cpu_dead", cpu=cpu)

    def cpu_up_prepare(self, t: Thread, cpu: int) -> Gen:
        """cpuup_callback(CPU_UP_PREPARE): free_limit first, then the arrays."""
        m = self.machine
        node = m.cpus[cpu].node
        yield from self.cache_chain_mutex.lock(t)
        for c in list(self.cache_chain):
            l3 = c.nodelists[node]
            irqf = yield from l3.list_lock.lock_irqsave(t)
            l3.free_limit = (1 + self.nr_cpus_node(node)) * c.batchcount + c.geo.num
            yield from l3.list_lock.unlock_irqrestore(t, irqf)
        for c in list(self.cache_chain):
            if c.array[cpu] is None:
                t.charge("kmalloc")
                c.array[cpu] = ArrayCache(c.limit, c.batchcount)
            l3 = c.nodelists[node]
            irqf = yield from l3.list_lock.lock_irqsave(t)
            if l3.shared is None and c.shared:
                t.charge("kmalloc")
                l3.shared = ArrayCache(c.shared * c.batchcount, 0xBAADF00D)
            if m.nodes > 1 and not l3.alien:
                self.alloc_alien_cache(c, l3.node)
            yield from l3.list_lock.unlock_irqrestore(t, irqf)
        yield from self.cache_chain_mutex.unlock(t)

    def cpu_online(self, t: Thread, cpu: int) -> Gen:
        """cpuup_callback(CPU_ONLINE): start_cpu_timer, which (re)starts the CPU's cache_reap
        only when its reap_work was cleared (`reap_work_cancel_on_down`)."""
        if self.tun["cache_reap"] and self.tun["reap_work_cancel_on_down"]:
            self.reapers[cpu] = PeriodicWork(
                self.machine, f"events/{cpu}:cache_reap", 2 * self.machine.hz * self._hz_ns,
                self.cache_reap, cpu=cpu, first_delay=(self.machine.hz + 3 * cpu) * self._hz_ns,
                pri=NICE_0)
        self.machine.metrics.event("cpu_online", cpu=cpu)
        yield from ()

    def alloc_alien_cache(self, c: LinuxCache, node: int) -> None:
        """alloc_alien_cache: one array of ALIEN_LIMIT (1 when the cache limit is 1) per
        remote node, each with its own lock."""
        limit = 1 if c.limit == 1 else ALIEN_LIMIT
        l3 = c.nodelists[node]
        for other in range(self.machine.nodes):
            if other != node:
                l3.alien[other] = ArrayCache(limit, 0xBAADF00D,
                                             lock=SpinLock(self.machine, f"{c.name}->alien_lock"))
