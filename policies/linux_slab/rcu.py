"""Linux SLAB caches with SLAB_DESTROY_BY_RCU (seed 003 mm/slab.c slab_destroy 1760-1777,
kmem_rcu_free, kmem_cache_destroy 2358): a destroyed slab's pages go back to the page
allocator only after an RCU grace period, so a lockless reader that still holds a pointer
into the slab sees memory of the same type (objects themselves are reused at once).

slab_destroy runs the destructors and queues the slab with call_rcu; kmem_rcu_free, run from
the RCU softirq on the CPU that queued it once the grace period has passed, frees the pages
and the off-slab descriptor. kmem_cache_destroy waits in synchronize_rcu before it frees the
cache. The grace period is the `rcu_grace_period` tunable: classic RCU ends one when every
CPU has passed a quiescent state (a context switch, idle or user mode at a tick), which takes
a few ticks on an idle machine and more under load; the model does not derive it from the
simulated CPUs' activity.
"""

from __future__ import annotations

from policies.base import Gen
from policies.linux_slab.structs import LinuxCache, LinuxSlab
from simcore.cpu import Thread


class SlabRcu:
    """call_rcu / kmem_rcu_free / synchronize_rcu of LinuxSlabPolicy."""

    def call_rcu_free(self, t: Thread, c: LinuxCache, slab: LinuxSlab) -> None:
        """slab_destroy's call_rcu(kmem_rcu_free): the pages stay allocated (counted in the
        cache's `rcu_pending` slabs) until the grace period ends."""
        m = self.machine
        due = t.now + self.tun["rcu_grace_period"]
        c.rcu_pending += 1
        c.rcu_last_due = max(c.rcu_last_due, due)
        t.charge("list_op")

        def kmem_rcu_free(h: Thread) -> Gen:
            m.memory.release_pages(h, slab.base, c.geo.gfporder)
            if c.geo.off_slab:
                h.charge("kmalloc")
            c.rcu_pending -= 1
            c.rcu_freed += 1
            yield from ()

        m.raise_irq(t.cpu.id, kmem_rcu_free, "RCU:kmem_rcu_free", at=due)

    def synchronize_rcu(self, t: Thread) -> Gen:
        """synchronize_rcu: sleep for one grace period (callbacks queued before it have run
        by then)."""
        yield from t.sleep(self.tun["rcu_grace_period"])
