"""`slub`: Linux SLUB (linux-6.8-mm-slub.c) with the opt-in percpu sheaves and per-node barn
of Linux 6.18 (linux-6.18-slab-sheaves-patch.txt).

Read it side by side with the seed; the modules carry the seed's functions:

- `geometry`: calculate_sizes, calculate_order / calc_slab_order, min_partial, set_cpu_partial;
- `cpu_slab`: the lockless fast paths (slab_alloc_node, do_slab_free), ___slab_alloc,
  flush_slab / flush_cpu_slab / flush_all;
- `partial`: get_partial_node / get_any_partial / get_partial, put_cpu_partial /
  __put_partials, deactivate_slab, __slab_free;
- `slab`: new_slab / allocate_slab, discard_slab, freeze_slab, get_freelist;
- `bulk`: __kmem_cache_alloc_bulk, __kmem_cache_free_bulk, build_detached_freelist;
- `sheaf` and `barn`: the 6.18 sheaves (alloc_from_pcs, free_to_pcs, the replace functions,
  refill_sheaf, sheaf_flush_main) and the node barn;
- `sysfs`: /proc/slabinfo (tunables 0 0 0) and /sys/kernel/slab with CONFIG_SLUB_STATS;
- this module: kmem_cache_create (kmem_cache_open, init_percpu_sheaves), kmem_cache_shrink
  (flush_all + __kmem_cache_do_shrink with barn_shrink), kmem_cache_destroy, the statistics.

Deliberate deviations (docs/policies/slub.md has the full list):

- Interrupts reach a thread only at its synchronisation points, so the fast paths' cmpxchg
  never fails (cmpxchg_double_cpu_fail stays 0); the slab freelist cmpxchg fails only when the
  slab changed while the freeing CPU spun for list_lock.
- sheaf_capacity is a policy tunable applied to the caches named in `sheaf_caches` (all when
  empty); the kernel takes it from each cache's kmem_cache_args.
- The kmalloc of a sheaf never fails, so __pcs_replace_full_main's flush-the-main fallback is
  not reached.
- CONFIG_SLUB_STATS counters are always kept (the kernel needs the config option).
- SLAB_FREELIST_RANDOM, SLAB_FREELIST_HARDENED, debugging, memcg accounting and KASAN/KFENCE
  are not modelled; objects are laid out in address order.
- The first, higher-order attempt of allocate_slab (__GFP_NORETRY without reclaim) is an
  atomic request of the model's page allocator; one page allocator serves every node, so
  node-local allocation is a property of which node's lists a slab is put on.
- CacheSpec's dtor_cost is ignored (SLUB has no destructors).
"""

from __future__ import annotations

from typing import Any

from policies.base import CacheSpec, CacheStats, Gen, InvariantError, Policy, Tunable
from policies.slub.barn import NodeBarn, SlubBarn
from policies.slub.bulk import SlubBulk
from policies.slub.cpu_slab import SlubCpuSlab
from policies.slub.geometry import cpu_partial_objects, cpu_partial_slabs_for, geometry
from policies.slub.partial import SlubPartial
from policies.slub.sheaf import SlabSheaf, SlubPercpuSheaves, SlubSheaves, kmalloc_size
from policies.slub.slab import SlubSlabs
from policies.slub.structs import (
    ALLOC_SLAB,
    SHEAF_ALLOC,
    SHEAF_FREE,
    STAT_ITEMS,
    KmemCacheCpu,
    KmemCacheNode,
    Slab,
    SlubCache,
)
from policies.slub.sysfs import format_slub_slabinfo, format_sys_kernel_slab
from simcore.cpu import Thread
from simcore.mutex import Mutex
from simcore.spinlock import SpinLock
from simcore.taskq import Taskq

SHRINK_PROMOTE_MAX = 32
"""__kmem_cache_do_shrink sorts partial slabs with up to this many free objects."""
KMEM_CACHE_CPU_BYTES = 32
"""struct kmem_cache_cpu without lockdep and CONFIG_SLUB_STATS (freelist, tid, slab, partial)."""
KMEM_CACHE_NODE_BYTES = 72
"""struct kmem_cache_node with CONFIG_SLUB_DEBUG's counters and full list, and the barn
pointer."""
NODE_BARN_BYTES = 48
"""struct node_barn (kmalloc_node'ed: a 64-byte object)."""


class SlubPolicy(SlubCpuSlab, SlubPartial, SlubSlabs, SlubBulk, SlubSheaves, SlubBarn, Policy):
    """Linux SLUB: lockless per-CPU freelists on a cpu slab, cpu partial slabs, per-node
    partial lists under list_lock; 6.18 sheaves and barn per cache."""

    name = "slub"
    summary = ("Linux SLUB (6.8 mm/slub.c): lockless cpu freelists, cpu partial slabs, node "
               "partial lists under list_lock; 6.18 percpu sheaves and barn (sheaf_capacity)")
    tunables = (
        Tunable("slub_min_objects", 0,
                "boot parameter: objects a slab should hold (0: 4 * (fls(nr_cpus) + 1), "
                "calculate_order)", minimum=0),
        Tunable("slub_min_order", 0, "boot parameter: smallest slab order (calculate_order)",
                minimum=0),
        Tunable("slub_max_order", 3,
                "boot parameter: order above which min_objects stops counting "
                "(PAGE_ALLOC_COSTLY_ORDER, calculate_order)", minimum=0),
        Tunable("nr_cpu_ids", 0,
                "possible CPUs, used by calculate_order when one CPU is present (0: the "
                "machine's CPUs)", minimum=0),
        Tunable("cpu_partial", -1,
                "/sys/kernel/slab/*/cpu_partial for every cache, objects (-1: set_cpu_partial's "
                "120 / 52 / 24 / 6 by size); cpu_partial_slabs = ceil(2 x cpu_partial / "
                "objs_per_slab)", minimum=-1),
        Tunable("min_partial", -1,
                "/sys/kernel/slab/*/min_partial (-1: ilog2(size) / 2 within 5..10, "
                "kmem_cache_open)", minimum=-1),
        Tunable("CONFIG_SLUB_CPU_PARTIAL", True,
                "per-CPU partial lists (kmem_cache_has_cpu_partial); false: frees to full "
                "slabs take list_lock and add_partial"),
        Tunable("remote_node_defrag_ratio", 100,
                "/sys/kernel/slab/*/remote_node_defrag_ratio (0..100; get_any_partial)",
                minimum=0),
        Tunable("sheaf_capacity", 0,
                "6.18 kmem_cache_args.sheaf_capacity: objects per percpu sheaf (0: no sheaves)",
                minimum=0),
        Tunable("sheaf_caches", "",
                "comma-separated caches that get sheaf_capacity (empty: every cache)"),
    )

    def __init__(self, machine: Any, tunables: dict[str, Any] | None = None) -> None:
        super().__init__(machine, tunables)
        m = self.machine
        self.flush_lock = Mutex(m, "flush_lock")
        """flush_all's static flush_lock."""
        self.flushwq: dict[int, Taskq] = _LazyFlushwq(m)
        """The flushwq workqueue's per-CPU workers (created on first use)."""
        self.slabs_created = 0
        self.slabs_freed = 0
        self._cycles = m.rng("slub.get_cycles")
        mt = m.metrics
        self._h_hit = mt.hist("alloc.hit")
        self._h_refill = mt.hist("alloc.refill")
        self._h_grow = mt.hist("alloc.grow")
        self._h_free_hit = mt.hist("free.hit")
        self._h_free_slow = mt.hist("free.slow")
        c = m.costs
        self._alloc_hit_ns = c["call"] + c["magazine_pop"]
        self._free_hit_ns = c["call"] + c["magazine_push"]
        self._alloc_hits = 0
        self._free_hits = 0
        names = [n.strip() for n in self.tun["sheaf_caches"].split(",") if n.strip()]
        self._sheaf_caches = set(names)

    def stat(self, t: Thread, s: SlubCache, item: int, n: int = 1) -> None:
        """stat / stat_add: a CONFIG_SLUB_STATS item on the running CPU."""
        s.cpu_slab[t.cpu.id].stat[item] += n

    # --- cache creation ---------------------------------------------------------------------
    def create_cache(self, spec: CacheSpec) -> SlubCache:
        """kmem_cache_create -> kmem_cache_open: calculate_sizes, min_partial, set_cpu_partial,
        one kmem_cache_node per node (with a barn when sheaves are on), kmem_cache_cpu per CPU,
        and init_percpu_sheaves (an empty main sheaf per CPU)."""
        m = self.machine
        tun = self.tun
        if tun["remote_node_defrag_ratio"] > 100:
            raise ValueError("remote_node_defrag_ratio must be <= 100 "
                             "(remote_node_defrag_ratio_store: -ERANGE)")
        geo = geometry(spec.size, spec.align, "SLAB_HWCACHE_ALIGN" in spec.flags,
                       spec.ctor_cost > 0, m.ncpus, tun["nr_cpu_ids"] or m.ncpus,
                       tun["slub_min_objects"], tun["slub_min_order"],
                       max(tun["slub_max_order"], tun["slub_min_order"]), m.memory.page_size)
        has_cpu_partial = tun["CONFIG_SLUB_CPU_PARTIAL"]
        cpu_partial = cpu_partial_objects(geo.size, m.memory.page_size, has_cpu_partial)
        if tun["cpu_partial"] >= 0:
            if tun["cpu_partial"] and not has_cpu_partial:
                raise ValueError("cpu_partial needs CONFIG_SLUB_CPU_PARTIAL")
            cpu_partial = tun["cpu_partial"]
        min_partial = geo.min_partial if tun["min_partial"] < 0 else tun["min_partial"]
        capacity = tun["sheaf_capacity"]
        if self._sheaf_caches and spec.name not in self._sheaf_caches:
            capacity = 0
        nodes = []
        for node in range(m.nodes):
            n = KmemCacheNode(node, SpinLock(m, f"{spec.name}->list_lock"))
            if capacity:
                n.barn = NodeBarn(node, SpinLock(m, f"{spec.name}->barn_lock"))
            nodes.append(n)
        s = SlubCache(spec.name, spec, geo, min_partial, cpu_partial,
                      cpu_partial_slabs_for(cpu_partial, geo.objects), has_cpu_partial,
                      [KmemCacheCpu(cpu.id) for cpu in m.cpus], nodes,
                      remote_node_defrag_ratio=tun["remote_node_defrag_ratio"] * 10)
        if capacity:
            s.sheaf_capacity = capacity
            s.cpu_sheaves = [SlubPercpuSheaves(SlabSheaf()) for _ in m.cpus]
            s.live_sheaves.update(pcs.main for pcs in s.cpu_sheaves)
            s.cpu_slab[0].stat[SHEAF_ALLOC] += m.ncpus
        return s

    # --- shrink and destroy -------------------------------------------------------------------
    def reap(self, t: Thread, s: SlubCache) -> Gen:
        """kmem_cache_shrink -> __kmem_cache_shrink: flush_all, then __kmem_cache_do_shrink."""
        s.busy += 1
        yield from self.flush_all(t, s)
        yield from self.kmem_cache_do_shrink(t, s)
        s.busy -= 1
        self.machine.metrics.event("reap", cache=s.name, cpu=t.cpu.id)

    def kmem_cache_do_shrink(self, t: Thread, s: SlubCache) -> Gen:
        """__kmem_cache_do_shrink: per node, barn_shrink (6.18), then under list_lock take
        every empty partial slab off the list for discard and sort the rest so that the
        slabs with the fewest free objects come first; discard after the lock is dropped."""
        for n in s.node:
            if n.barn is not None:
                yield from self.barn_shrink(t, s, n.barn)
            irqf = yield from n.list_lock.lock_irqsave(t)
            discard: list[Slab] = []
            promote: list[list[Slab]] = [[] for _ in range(SHRINK_PROMOTE_MAX)]
            for slab in list(n.partial):
                free = slab.objects - slab.inuse
                t.charge("list_op")
                if free == slab.objects:
                    self.remove_partial(t, n, slab)
                    discard.append(slab)
                elif free <= SHRINK_PROMOTE_MAX:
                    n.partial.remove(slab)
                    promote[free - 1].append(slab)
            for group in reversed(promote):
                for slab in reversed(group):
                    n.partial.add(slab)
            yield from n.list_lock.unlock_irqrestore(t, irqf)
            for slab in discard:
                yield from self.discard_slab(t, s, slab, "shrink")

    def destroy(self, t: Thread, s: SlubCache) -> Gen:
        """kmem_cache_destroy -> __kmem_cache_shutdown: flush every CPU, shrink the barns,
        free the partial slabs; objects still in use make it fail (the cache stays)."""
        yield from self.reap(t, s)
        if s.inuse:
            self.machine.metrics.event("kmem_cache_destroy_not_empty", cache=s.name)
            raise InvariantError(f"{s.name}: destroy with {s.inuse} objects in use")
        if s.cpu_sheaves is not None:
            for pcs in s.cpu_sheaves:
                self.free_empty_sheaf(t, s, pcs.main)
            s.cpu_sheaves = None
        self.caches.remove(s)

    # --- statistics -------------------------------------------------------------------------
    def flush_hit_counts(self) -> None:
        """Put the fast-path hits counted since the last call into the alloc.hit / free.hit
        histograms: each hit's latency is the constant cost of its path."""
        for hist, ns, n in ((self._h_hit, self._alloc_hit_ns, self._alloc_hits),
                            (self._h_free_hit, self._free_hit_ns, self._free_hits)):
            if n:
                hist.record(ns, n)
        self._alloc_hits = self._free_hits = 0

    def all_slabs(self, s: SlubCache) -> list[Slab]:
        """Every slab of the cache."""
        return list(s.slabs)

    def sheaf_objects(self, s: SlubCache) -> int:
        """Objects in sheaves: percpu, in the barns, or being refilled or flushed."""
        return sum(sh.size for sh in s.live_sheaves)

    def metadata_bytes(self, s: SlubCache) -> int:
        """kmem_cache_cpu per CPU, kmem_cache_node (and node_barn) per node, and every sheaf
        (kzalloc'ed, rounded to its kmalloc size)."""
        m = self.machine
        total = m.ncpus * KMEM_CACHE_CPU_BYTES + m.nodes * KMEM_CACHE_NODE_BYTES
        if s.sheaf_capacity:
            total += m.nodes * kmalloc_size(NODE_BARN_BYTES)
            total += len(s.live_sheaves) * self.sheaf_bytes(s)
        return total

    def stats(self, s: SlubCache) -> CacheStats:
        self.flush_hit_counts()
        page = self.machine.memory.page_size
        cpu_free = sum(len(c.freelist) for c in s.cpu_slab)
        sheaved = self.sheaf_objects(s)
        slab_free = sum(len(sl.freelist) for sl in self.all_slabs(s))
        node_partial = sum(n.nr_partial for n in s.node)
        cpu_partial = sum(len(c.partial) for c in s.cpu_slab)
        empty = sum(1 for n in s.node for sl in n.partial if not sl.inuse) + sum(
            1 for c in s.cpu_slab for sl in c.partial if not sl.inuse)
        cpu_partial_free = sum(len(sl.freelist) for c in s.cpu_slab for sl in c.partial)
        cpu_partial_pages = sum(1 << sl.order for c in s.cpu_slab for sl in c.partial)
        barn_full = sum(n.barn.nr_full for n in s.node if n.barn is not None)
        barn_empty = sum(n.barn.nr_empty for n in s.node if n.barn is not None)
        extra = {"allocs": s.allocs, "frees": s.frees, "alloc_fail": s.alloc_fail,
                 "grown": s.total(ALLOC_SLAB), "cpu_freelist_objs": cpu_free,
                 "sheaf_objs": sheaved, "node_partial_slabs": node_partial,
                 "cpu_partial_slabs": cpu_partial, "cpu_partial_free_objs": cpu_partial_free,
                 "cpu_partial_bytes": cpu_partial_pages * page,
                 "cpu_slabs": sum(1 for c in s.cpu_slab if c.slab is not None),
                 "barn_full": barn_full, "barn_empty": barn_empty,
                 "pcs_trylock_fail": s.pcs_trylock_fail}
        for i, name in enumerate(STAT_ITEMS):
            extra[name] = s.total(i)
        return CacheStats(
            name=s.name, obj_size=s.geo.object_size, objs_inuse=s.inuse,
            objs_cached=cpu_free + sheaved, objs_free=slab_free,
            slabs=sum(n.nr_slabs for n in s.node), slabs_partial=node_partial + cpu_partial - empty,
            slabs_empty=empty, bytes_slab=sum(n.pages for n in s.node) * page,
            bytes_meta=self.metadata_bytes(s), objs_per_slab=s.geo.objects,
            pages_per_slab=s.geo.pages, extra=extra)

    def check_invariants(self) -> None:
        """Always: object conservation (every object of every slab is in use, in transit on a
        path, on a cpu freelist, in a sheaf or free in its slab, and on one freelist at
        most), slab counters, node counters, allocs - frees = in use, sheaf accounting. When
        no operation is in progress also: list membership against slab state (frozen = cpu
        slab; node partial slabs unfrozen with free objects; no slab with free objects off
        every list), every sheaf reachable, no local lock held."""
        for s in self.caches:
            self._check_conservation(s)
            if not s.busy:
                self._check_lists(s)

    def _check_conservation(self, s: SlubCache) -> None:
        slabs = self.all_slabs(s)
        if len(s.owner) != sum(sl.objects for sl in slabs) or any(
                s.owner.get(sl.base) is not sl for sl in slabs):
            raise InvariantError(f"{s.name}: virt_to_slab map disagrees with the slabs")
        for sl in slabs:
            if sl.inuse + len(sl.freelist) != sl.objects:
                raise InvariantError(f"{s.name}: slab inuse {sl.inuse} + free "
                                     f"{len(sl.freelist)} != {sl.objects}")
        for n in s.node:
            mine = [sl for sl in slabs if sl.node == n.node]
            if len(mine) != n.nr_slabs or sum(sl.objects for sl in mine) != n.total_objects:
                raise InvariantError(f"{s.name}: nr_slabs / total_objects of node {n.node} "
                                     "disagree with its slabs")
        held = [o for c in s.cpu_slab for o in c.freelist]
        held += [o for sh in s.live_sheaves for o in sh.objects]
        if any(sh.size > s.sheaf_capacity for sh in s.live_sheaves):
            raise InvariantError(f"{s.name}: sheaf over sheaf_capacity")
        free = [o for sl in slabs for o in sl.freelist]
        total = sum(sl.objects for sl in slabs)
        if s.inuse + s.transit + len(held) + len(free) != total:
            raise InvariantError(f"{s.name}: {s.inuse} in use + {s.transit} in transit + "
                                 f"{len(held)} cached + {len(free)} free != {total} objects")
        if len(set(held) | set(free)) != len(held) + len(free):
            raise InvariantError(f"{s.name}: an object is on two freelists")
        if s.allocs - s.frees != s.inuse:
            raise InvariantError(f"{s.name}: allocs - frees != in use")
        if s.total(SHEAF_ALLOC) - s.total(SHEAF_FREE) != len(s.live_sheaves):
            raise InvariantError(f"{s.name}: sheaf_alloc - sheaf_free != live sheaves")

    def _check_lists(self, s: SlubCache) -> None:
        slabs = self.all_slabs(s)
        if s.transit:
            raise InvariantError(f"{s.name}: {s.transit} objects in transit while idle")
        cpu_slabs = {c.slab for c in s.cpu_slab if c.slab is not None}
        cpu_partial = [sl for c in s.cpu_slab for sl in c.partial]
        if len(cpu_partial) != len(set(cpu_partial)) or any(
                sl.frozen or sl.node_partial for sl in cpu_partial):
            raise InvariantError(f"{s.name}: cpu partial slab also elsewhere")
        for n in s.node:
            for sl in n.partial:
                if sl.frozen or not sl.node_partial or not sl.freelist or sl.node != n.node:
                    raise InvariantError(f"{s.name}: bad slab on node {n.node} partial list")
        on_cpu_partial = set(cpu_partial)
        for sl in slabs:
            if (sl in cpu_slabs) != sl.frozen:
                raise InvariantError(f"{s.name}: frozen flag disagrees with the cpu slabs")
            if not sl.frozen and not sl.node_partial and sl not in on_cpu_partial and sl.freelist:
                raise InvariantError(f"{s.name}: slab with free objects on no list")
        for c in s.cpu_slab:
            if c.freelist and (c.slab is None or any(s.owner[o] is not c.slab
                                                     for o in c.freelist)):
                raise InvariantError(f"{s.name}: cpu {c.cpu} freelist not of its cpu slab")
        if s.cpu_sheaves is not None:
            reach = [p.main for p in s.cpu_sheaves] + [p.spare for p in s.cpu_sheaves
                                                       if p.spare is not None]
            for n in s.node:
                assert n.barn is not None
                reach += n.barn.sheaves_full + n.barn.sheaves_empty
                if any(sh.size for sh in n.barn.sheaves_empty):
                    raise InvariantError(f"{s.name}: non-empty sheaf on a barn's empty list")
            if set(reach) != s.live_sheaves or len(reach) != len(s.live_sheaves):
                raise InvariantError(f"{s.name}: {len(reach)} sheaves reachable, "
                                     f"{len(s.live_sheaves)} allocated")
            if any(p.locked for p in s.cpu_sheaves):
                raise InvariantError(f"{s.name}: cpu_sheaves local lock left held")

    def reports(self) -> dict[str, str]:
        caches = list(reversed(self.caches))
        return {"slabinfo.txt": format_slub_slabinfo(self, caches),
                "sys_kernel_slab.txt": format_sys_kernel_slab(self, caches)}


class _LazyFlushwq(dict):
    """flushwq's per-CPU worker, created the first time work is queued on that CPU."""

    def __init__(self, machine: Any) -> None:
        super().__init__()
        self.machine = machine

    def __missing__(self, cpu: int) -> Taskq:
        tq = Taskq(self.machine, f"kworker/{cpu}:slub_flushwq", nthreads=1, affinity=[cpu])
        self[cpu] = tq
        return tq

