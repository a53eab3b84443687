"""`linux_slab`: the Linux SLAB allocator (seeds/003: Linux 2.6.17 mm/slab.c; seeds/004: the
percpu allocator for CPU caches, Linux 3.18).

Read side by side with the seed:

- allocation: `kmem_cache_alloc` -> `__cache_alloc` (IRQs saved) -> `____cache_alloc` (array
  hit) or `cache_alloc_refill` (shared array first, then partial head, then free head, then
  `cache_grow` and retry); node-directed `kmem_cache_alloc_node` -> `__cache_alloc_node`;
- growth: `cache_grow` (colour step under list_lock, IRQs on only for requests that may sleep,
  pages then constructors, link at the tail of slabs_free);
- free: `kmem_cache_free` -> `__cache_free` (alien check, array push or `cache_flusharray`:
  shared array, else `free_block`, which destroys a slab that empties while the node holds
  more than free_limit free objects);
- NUMA: `cache_free_alien`, `__drain_alien_cache`, `reap_alien` (nodes > 1 only);
- the reaper: `start_cpu_timer` / `cache_reap` per CPU every REAPTIMEOUT_CPUC (2 s) after the
  previous pass, first at HZ + 3 x cpu jiffies; per-node work every REAPTIMEOUT_LIST3 (4 s)
  with a per-cache offset; `drain_array` with the touched rule; free slabs trimmed
  ceil(free_limit / (5 num)) per visit unless free_touched; a pass is skipped when
  cache_chain_mutex is busy;
- shrink: `kmem_cache_shrink` -> `drain_cpu_caches` (every CPU array, alien and shared array)
  then every free slab;
- tunables: `enable_cpucache` defaults; free_limit = (1 + CPUs on node) x batchcount + num;
- statistics: the STATS counters and `/proc/slabinfo` 2.1 (statistics) with s_show's layout.

Switches for behaviour that changed after 2.6.17 (defaults are 2.6.17):
`shared_touched_on_refill` (4.x marks the shared array touched on every refill from it, so a
busy shared array is spared by the reaper), `destroy_under_lock` (3.x destroys slabs after
dropping list_lock), `reap_from_free_head` (2.6.17 cache_reap takes the head of slabs_free;
drain_freelist the tail), `percpu_cpu_cache` (patch 004: arrays for every possible CPU from the
percpu allocator, 16 + 8 x limit bytes, no kmalloc rounding; an offlined CPU keeps its array),
`reap_work_cancel_on_down` (2.6.19+: an onlined CPU gets its cache_reap back).

Run-time events (experiments/events.py): CPU hotplug through cpuup_callback (hotplug.py) and
/proc/slabinfo writes through do_tune_cpucache (tune.py); SLAB_DESTROY_BY_RCU caches free slab
pages after a grace period (rcu.py); `cpuset_memory_spread_slab` with SLAB_MEM_SPREAD caches
takes alternate_node_alloc.

Deliberate deviations from the seed:

- Off-slab descriptors (objects >= PAGE_SIZE/8) are charged as a kmalloc cost and counted as
  metadata (rounded to their general cache size); they are not allocated from a modelled
  size-N cache, so the nested slabp_cache allocation and its lock are not simulated.
- The STATS counters are always kept (summary.json shows them) but printed in /proc/slabinfo
  only when `STATS` is true, which models a CONFIG_DEBUG_SLAB build: its geometry (red zone
  and user words), its limit cap of 32 and the O(free slabs) walk in every flush. Poisoning
  and the red-zone checks themselves cost nothing in the model.
- `kmem_cache_shrink`'s drain IPIs run as interrupts on every other CPU (raise_irq); the caller
  sleeps until all have run instead of spinning in on_each_cpu.
- CPU hotplug (hotplug.py), /proc/slabinfo retuning (tune.py), SLAB_DESTROY_BY_RCU (rcu.py)
  and cpuset memory spreading run from an experiment's `[[events]]` and tunables; their own
  deviations are in those modules.
- Colouring is computed and rotated per node (colour_next) but has no cache effect in the model.
- Task migration during a sleeping grow follows the simulated scheduler: the array is re-read
  after cache_grow, as in the seed.
- One page allocator serves every node (memory is not per node).
"""

from __future__ import annotations

import zlib
from typing import Any

from policies.base import CacheSpec, CacheStats, Gen, InvariantError, Policy, Tunable
from policies.linux_slab.alien import SlabAlien
from policies.linux_slab.alloc import SlabAllocPaths
from policies.linux_slab.free import SlabFreePaths
from policies.linux_slab.geometry import (
    CpuCacheTunables,
    align_up,
    array_header,
    cpu_array_bytes,
    enable_cpucache,
    geometry,
    kmalloc_size,
)
from policies.linux_slab.grow import SlabGrow
from policies.linux_slab.hotplug import SlabHotplug
from policies.linux_slab.rcu import SlabRcu
from policies.linux_slab.reap import SlabReaper
from policies.linux_slab.slabinfo import format_slabinfo_2617
from policies.linux_slab.structs import ArrayCache, KmemList3, LinuxCache
from policies.linux_slab.tune import SlabTune
from simcore.cpu import Thread
from simcore.mutex import Mutex
from simcore.sched import NICE_0
from simcore.spinlock import SpinLock
from simcore.timer import PeriodicWork


class LinuxSlabPolicy(SlabAllocPaths, SlabGrow, SlabFreePaths, SlabAlien, SlabReaper, SlabHotplug,
                      SlabTune, SlabRcu, Policy):
    """Linux 2.6.17 SLAB: per-CPU array caches, shared and alien arrays, three slab lists per
    node, free_limit, and the cache_reap timer."""

    name = "linux_slab"
    summary = ("Linux SLAB (2.6.17 mm/slab.c): per-CPU array caches, shared/alien arrays, "
               "free_limit, cache_reap; patch 004 percpu accounting")
    tunables = (
        Tunable("shared_touched_on_refill", False,
                "4.x: a refill from the shared array marks it touched, so cache_reap spares a "
                "busy shared array (2.6.17: only alien drains mark it)"),
        Tunable("destroy_under_lock", True,
                "2.6.17 free_block destroys slabs holding list_lock with IRQs off; false: 3.x "
                "slabs_destroy after the lock is dropped"),
        Tunable("reap_from_free_head", True,
                "2.6.17 cache_reap frees from the head of slabs_free; false: drain_freelist "
                "takes the tail"),
        Tunable("percpu_cpu_cache", False,
                "patch 004: per-CPU arrays from the percpu allocator for every possible CPU, "
                "16 + pointer x limit bytes, no kmalloc rounding"),
        Tunable("nr_cpu_ids", 0, "possible CPUs for patch 004 accounting (0: the machine's CPUs)",
                minimum=0),
        Tunable("sizeof_pointer", 8, "BYTES_PER_WORD: 8 on 64-bit, 4 on 32-bit (28-byte struct "
                "slab, 4-byte words in the geometry, 4-byte array entries)", choices=(4, 8)),
        Tunable("CONFIG_SMP", True, "an SMP build: enable_cpucache gives objects up to a page "
                "a shared array (shared 8) whatever the number of CPUs"),
        Tunable("STATS", False,
                "a CONFIG_DEBUG_SLAB build (DEBUG, STATS, FORCED_DEBUG): red zone and user "
                "words, limit at most 32, the O(free slabs) walk in cache_flusharray, and "
                "/proc/slabinfo 2.1 (statistics); false: the plain 2.1 layout"),
        Tunable("slab_break_gfp_order", 1,
                "calculate_slab_order stops at this order (1 when RAM > 32 MiB)", minimum=0),
        Tunable("cpucache_limit", 0, "per-CPU array limit for every cache (0: enable_cpucache)",
                minimum=0),
        Tunable("cpucache_batchcount", 0, "batchcount (0: (limit + 1) / 2)", minimum=0),
        Tunable("cpucache_shared", -1, "shared factor (-1: enable_cpucache's 8 / 0)",
                minimum=-1),
        Tunable("cache_reap", True, "run the per-CPU cache_reap timers"),
        Tunable("reap_work_cancel_on_down", False,
                "2.6.19+: CPU_DOWN_PREPARE cancels the CPU's cache_reap and clears its func, so "
                "CPU_ONLINE restarts it (2.6.17: an onlined CPU gets no cache_reap again)"),
        Tunable("NR_CPUS", 0,
                "CONFIG_NR_CPUS: entries of struct kmem_cache's array[] pointer table, which "
                "patch 004 replaces by one __percpu pointer (0: the possible CPUs)", minimum=0),
        Tunable("rcu_grace_period", 10_000_000,
                "ns from call_rcu to kmem_rcu_free for SLAB_DESTROY_BY_RCU caches", minimum=0),
        Tunable("cpuset_memory_spread_slab", False,
                "every task's cpuset has memory_spread_slab (PF_SPREAD_SLAB): allocations from "
                "SLAB_MEM_SPREAD caches rotate over the nodes (alternate_node_alloc)"),
    )

    def __init__(self, machine: Any, tunables: dict[str, Any] | None = None) -> None:
        super().__init__(machine, tunables)
        m = self.machine
        self.cache_chain_mutex = Mutex(m, "cache_chain_mutex")
        self.cache_chain: list[LinuxCache] = []
        """cache_chain, head first (newest cache first); a destroyed cache leaves it."""
        self.reap_skipped = 0
        """cache_reap passes skipped because cache_chain_mutex was busy."""
        self.reapers: list[PeriodicWork] = []
        self.reap_node = [(cpu.node + 1) % m.nodes for cpu in m.cpus]
        """Per-CPU NUMA reap rotor (next_reap_node)."""
        mt = m.metrics
        self._h_hit = mt.hist("alloc.hit")
        self._h_refill = mt.hist("alloc.refill")
        self._h_grow = mt.hist("alloc.grow")
        self._h_free_hit = mt.hist("free.hit")
        self._h_flush = mt.hist("free.flush")
        self._t_hit = self._h_hit.tally
        self._t_refill = self._h_refill.tally
        self._t_grow = self._h_grow.tally
        self._t_free_hit = self._h_free_hit.tally
        self._t_flush = self._h_flush.tally
        """The histograms' tallies: __cache_alloc / __cache_free count a latency by value
        (`tally[ns] += 1`), folded into the histogram on any read."""
        c = m.costs
        self._alloc_hit_ns = c["call"] + c["irq_disable"] + c["magazine_pop"] + c["irq_enable"]
        self._free_hit_ns = c["call"] + c["irq_disable"] + c["magazine_push"] + c["irq_enable"]
        self._hit_pre_ns = c["call"] + c["irq_disable"]
        """Charged before an array hit's IRQ-off section opens (local_irq_save charges its
        cost, then IRQs are off)."""
        self._alloc_off_ns = c["magazine_pop"] + c["irq_enable"]
        self._free_off_ns = c["magazine_push"] + c["irq_enable"]
        """The IRQ-off sections of the array hits: constant lengths."""
        self._numa = m.nodes > 1
        self._call_ns = c["call"]
        self._magazine_pop_ns = c["magazine_pop"]
        self._magazine_push_ns = c["magazine_push"]
        """Costs the refill and flush paths charge inline (Thread.charge's arithmetic)."""
        self._slab_obj_op_ns = c["slab_obj_op"]
        self._list_op_ns = c["list_op"]
        self._free_block_obj_ns = c["slab_obj_op"] + c["list_op"]
        """free_block's cost per object: back to its slab, and the slab's list move."""
        self._stats = self.tun["STATS"]
        self._destroy_under_lock = self.tun["destroy_under_lock"]
        self._shared_touched_on_refill = self.tun["shared_touched_on_refill"]
        """Tunables read on the refill and flush paths (fixed for the run)."""
        mt.add_fold(self.fold_hits)
        self._hz_ns = 1_000_000_000 // m.hz
        self._spread = self.tun["cpuset_memory_spread_slab"] and m.nodes > 1
        self.spread_rotor: dict[Thread, int] = {}
        """current->cpuset_mem_spread_rotor per task."""

    # --- cache creation ---------------------------------------------------------------------
    def cache_create(self, spec: CacheSpec) -> LinuxCache:
        """kmem_cache_create: the new cache is linked at the head of cache_chain (seed 003
        2169), so the reaper and /proc/slabinfo visit the newest cache first."""
        c = super().cache_create(spec)
        self.cache_chain.insert(0, c)
        return c

    def create_cache(self, spec: CacheSpec) -> LinuxCache:
        """kmem_cache_create + setup_cpu_cache/enable_cpucache + alloc_kmemlist: geometry, one
        array per CPU, one kmem_list3 per node with its shared array and alien arrays."""
        m = self.machine
        word = self.tun["sizeof_pointer"]
        geo = geometry(spec.size, 0 if spec.align == 8 else spec.align,
                       "SLAB_HWCACHE_ALIGN" in spec.flags, "SLAB_RECLAIM_ACCOUNT" in spec.flags,
                       m.memory.page_size, self.tun["slab_break_gfp_order"],
                       debug=self.tun["STATS"], word=word)
        d = enable_cpucache(geo.buffer_size, m.memory.page_size, smp=self.tun["CONFIG_SMP"],
                            debug=self.tun["STATS"])
        limit = self.tun["cpucache_limit"] or d.limit
        batch = self.tun["cpucache_batchcount"] or (limit + 1) // 2
        shared = d.shared if self.tun["cpucache_shared"] < 0 else self.tun["cpucache_shared"]
        if batch > limit:
            raise ValueError(f"cpucache_batchcount {batch} > limit {limit}")
        tun = CpuCacheTunables(limit, batch, shared)
        arrays: list[ArrayCache | None] = [ArrayCache(limit, batch) for _ in m.cpus]
        nodes = []
        hz = self._hz_ns
        # next_reap = jiffies + REAPTIMEOUT_LIST3 + (cachep address) % REAPTIMEOUT_LIST3: the
        # name's CRC stands for the address
        offset = (zlib.crc32(spec.name.encode()) % (4 * m.hz)) * hz
        for node in range(m.nodes):
            ncpu = len(m.cpus_of_node(node))
            l3 = KmemList3(node, SpinLock(m, f"{spec.name}->list_lock"),
                           (1 + ncpu) * batch + geo.num,
                           next_reap=m.env.now + 4 * m.hz * hz + offset)
            if shared:
                l3.shared = ArrayCache(shared * batch, 0xBAADF00D)
            nodes.append(l3)
        c = LinuxCache(spec.name, spec, geo, tun, arrays, nodes,
                       rcu="SLAB_DESTROY_BY_RCU" in spec.flags,
                       mem_spread="SLAB_MEM_SPREAD" in spec.flags)
        if m.nodes > 1:
            for node in range(m.nodes):
                self.alloc_alien_cache(c, node)
        return c

    def start(self) -> None:
        """start_cpu_timer: each CPU's cache_reap first after HZ + 3 x cpu jiffies, then
        REAPTIMEOUT_CPUC (2 s) after each pass ends."""
        if not self.tun["cache_reap"]:
            return
        m = self.machine
        for cpu in m.cpus:
            self.reapers.append(PeriodicWork(
                m, f"events/{cpu.id}:cache_reap", 2 * m.hz * self._hz_ns, self.cache_reap,
                cpu=cpu.id, first_delay=(m.hz + 3 * cpu.id) * self._hz_ns, pri=NICE_0))

    def destroy(self, t: Thread, c: LinuxCache) -> Gen:
        """kmem_cache_destroy (seed 003 2331): unlink the cache from cache_chain under
        cache_chain_mutex first, then __cache_shrink. Slabs still in use: slab_error "Can't
        free all objects", the cache goes back at the head of the chain and the call returns
        1. Otherwise synchronize_rcu for SLAB_DESTROY_BY_RCU caches, free the arrays, return
        0."""
        yield from self.cache_chain_mutex.lock(t)
        self.cache_chain.remove(c)
        yield from self.cache_chain_mutex.unlock(t)
        busy = yield from self.cache_shrink(t, c)
        if busy:
            self.machine.metrics.event("slab_error", cache=c.name, cpu=t.cpu.id,
                                       function="kmem_cache_destroy",
                                       msg="Can't free all objects")
            yield from self.cache_chain_mutex.lock(t)
            self.cache_chain.insert(0, c)
            yield from self.cache_chain_mutex.unlock(t)
            return 1
        if c.rcu:
            yield from self.synchronize_rcu(t)
        self.fold_hits()
        self.caches.remove(c)
        if not self.cache_chain:
            for w in self.reapers:
                w.cancel()
        return 0

    # --- statistics -------------------------------------------------------------------------
    def possible_cpus(self) -> int:
        return self.tun["nr_cpu_ids"] or self.machine.ncpus

    def metadata_bytes(self, c: LinuxCache) -> int:
        """Array caches and off-slab descriptors. 2.6.17: one kmalloc'ed array per CPU that
        has one (rounded to its general cache) and the `array[NR_CPUS]` pointer table in
        struct kmem_cache (seed 003 371); patch 004: 16 + pointer x limit for every possible
        CPU and one __percpu pointer instead of the table. Shared and alien arrays are
        kmalloc'ed per node in both."""
        ptr = self.tun["sizeof_pointer"]
        percpu = self.tun["percpu_cpu_cache"]
        if percpu:
            total = self.possible_cpus() * cpu_array_bytes(c.limit, True, ptr) + ptr
        else:
            arrays = sum(1 for ac in c.array if ac is not None)
            total = (arrays * cpu_array_bytes(c.limit, False, ptr)
                     + ptr * (self.tun["NR_CPUS"] or self.possible_cpus()))
        for l3 in c.nodelists:
            if l3.shared is not None:
                total += kmalloc_size(array_header(ptr) + ptr * l3.shared.limit)
            for alien in l3.alien.values():
                total += kmalloc_size(array_header(ptr) + ptr * alien.limit)
        if c.geo.off_slab:
            slabs = sum(len(l3.slabs_full) + len(l3.slabs_partial) + len(l3.slabs_free)
                        for l3 in c.nodelists)
            total += slabs * kmalloc_size(align_up(c.geo.slab_size, 8))
        return total

    def fold_hits(self) -> None:
        """Record the hits the CPU arrays counted (Metrics.fold): per cache the STATS
        allochit / freehit and its allocs, frees and in-use count, per CPU the IRQ-off
        sections, and the alloc.hit / free.hit latencies (constants of the policy)."""
        cpus = self.machine.cpus
        a_off, f_off = self._alloc_off_ns, self._free_off_ns
        allocs = frees = 0
        for c in self.caches:
            for cpu_id, ac in enumerate(c.array):
                if ac is None:
                    continue
                n, f = ac.alloc_hits, ac.free_hits
                if n:
                    c.allochit += n
                    c.allocs += n
                    cpus[cpu_id].irq_off_sections(a_off, n)
                    allocs += n
                    ac.alloc_hits = 0
                if f:
                    c.freehit += f
                    c.frees += f
                    cpus[cpu_id].irq_off_sections(f_off, f)
                    frees += f
                    ac.free_hits = 0
                c.inuse += n - f
        if allocs:
            self._h_hit.record(self._alloc_hit_ns, allocs)
        if frees:
            self._h_free_hit.record(self._free_hit_ns, frees)

    def fast_hit_ns(self, c: LinuxCache) -> tuple[int, int] | None:
        """An array hit's constant cost (alloc_fast / free_fast)."""
        return self._alloc_hit_ns, self._free_hit_ns

    def stats(self, c: LinuxCache) -> CacheStats:
        self.fold_hits()
        full = sum(len(l3.slabs_full) for l3 in c.nodelists)
        partial = sum(len(l3.slabs_partial) for l3 in c.nodelists)
        empty = sum(len(l3.slabs_free) for l3 in c.nodelists)
        slabs = full + partial + empty
        cached = sum(ac.avail for ac in c.array if ac is not None) + sum(
            ac.avail for ac in c.retiring) + sum(
            (l3.shared.avail if l3.shared is not None else 0)
            + sum(a.avail for a in l3.alien.values()) for l3 in c.nodelists)
        page = self.machine.memory.page_size
        return CacheStats(
            name=c.name, obj_size=c.geo.buffer_size, objs_inuse=c.inuse, objs_cached=cached,
            objs_free=sum(l3.free_objects for l3 in c.nodelists), slabs=slabs,
            slabs_partial=partial, slabs_empty=empty,
            bytes_slab=(slabs + c.rcu_pending) * (page << c.geo.gfporder),
            bytes_meta=self.metadata_bytes(c), objs_per_slab=c.geo.num,
            pages_per_slab=c.geo.pages, limit=c.limit, batchcount=c.batchcount, shared=c.shared,
            shared_avail=sum(l3.shared.avail for l3 in c.nodelists if l3.shared is not None),
            extra={"allocs": c.allocs, "frees": c.frees, "grown": c.grown, "reaped": c.reaped,
                   "alloc_fail": c.alloc_fail, "allochit": c.allochit,
                   "allocmiss": c.allocmiss, "freehit": c.freehit, "freemiss": c.freemiss,
                   "listallocs": c.num_allocations, "maxobjs": c.high_mark,
                   "nodeallocs": c.node_allocs, "remotefrees": c.node_frees,
                   "alienoverflow": c.node_overflow, "free_limit_destroyed": c.destroyed,
                   "array_avail": sum(ac.avail for ac in c.array if ac is not None),
                   "rcu_pending": c.rcu_pending, "spread_allocs": c.spread_allocs,
                   "shared_avail": sum(l3.shared.avail for l3 in c.nodelists
                                       if l3.shared is not None),
                   "alien_avail": sum(a.avail for l3 in c.nodelists
                                      for a in l3.alien.values())})

    def check_invariants(self) -> None:
        """Checklist item 13 and s_show's checks: list membership by inuse, num_objs -
        active_objs = sum(free_objects), num_active = objects outside slabs = in use + cached,
        high_mark >= num_active, CPU arrays hold only their node's objects, owner map =
        slab capacity, allocs - frees = in use."""
        for c in self.caches:
            num = c.geo.num
            slabs = 0
            outside = 0
            for l3 in c.nodelists:
                free_objs = 0
                for s in l3.slabs_full:
                    if s.inuse != num or s.free:
                        raise InvariantError(f"{c.name}: slabs_full accounting error")
                for s in l3.slabs_partial:
                    if not 0 < s.inuse < num:
                        raise InvariantError(f"{c.name}: slabs_partial inuse accounting error")
                    free_objs += num - s.inuse
                for s in l3.slabs_free:
                    if s.inuse:
                        raise InvariantError(f"{c.name}: slabs_free/inuse accounting error")
                    free_objs += num
                for lst in (l3.slabs_full, l3.slabs_partial, l3.slabs_free):
                    for s in lst:
                        if s.inuse + len(s.free) != num or s.nodeid != l3.node:
                            raise InvariantError(f"{c.name}: slab free chain broken")
                        outside += s.inuse
                    slabs += len(lst)
                if free_objs != l3.free_objects:
                    raise InvariantError(f"{c.name}: free_objects accounting error on node "
                                         f"{l3.node}: lists {free_objs}, counter "
                                         f"{l3.free_objects}")
            st = self.stats(c)
            if outside != c.num_active or c.num_active != c.inuse + st.objs_cached:
                raise InvariantError(f"{c.name}: num_active {c.num_active}, outside slabs "
                                     f"{outside}, in use + cached {c.inuse + st.objs_cached}")
            if c.high_mark < c.num_active:
                raise InvariantError(f"{c.name}: high_mark below num_active")
            if len(c.owner) != slabs * num:
                raise InvariantError(f"{c.name}: owner map {len(c.owner)} != {slabs * num}")
            for cpu in self.machine.cpus:
                ac = c.array[cpu.id]
                if ac is None:
                    continue
                if ac.avail > ac.limit or any(c.owner[o].nodeid != cpu.node for o in ac.entry):
                    raise InvariantError(f"{c.name}: CPU {cpu.id} array over limit or holding "
                                         "another node's objects")
            if c.allocs - c.frees != c.inuse:
                raise InvariantError(f"{c.name}: allocs - frees != in use")

    def reports(self) -> dict[str, str]:
        return {"slabinfo.txt": format_slabinfo_2617(self, self.cache_chain)}

