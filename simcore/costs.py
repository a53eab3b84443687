"""The cost table: nanoseconds of simulated time charged for each step of kernel work.

Defaults describe a ~3 GHz x86-64 server of the 2015-2020 era. They are order-of-magnitude
figures from public measurements, not calibrations of one machine: an uncontended lock or an
atomic op ~20 ns (a locked instruction on a line in the local cache), a contended lock handing
its cache line to another core ~100 ns (cross-core transfer, ~200 ns across sockets), a
magazine/array push or pop a few ns of pointer work, page allocation from the buddy allocator
~250 ns per order-0 page, vmalloc ~250 ns per page for page-table population (outside
vmap_area_lock, which covers only the ~300 ns range search), interrupt entry+exit ~1 us, a
context switch ~2 us, a wake-up onto an idle CPU ~3 us more (IPI and idle exit). Where each
number comes from is in `COST_SOURCES`. Every entry can be overridden per experiment in
`[costs]`.
"""

from __future__ import annotations

from dataclasses import dataclass

from simcore.units import parse_duration

DEFAULT_COSTS: dict[str, tuple[int, str]] = {
    # local, per-CPU work
    "magazine_pop": (5, "pop one object from a per-CPU magazine / array cache"),
    "magazine_push": (5, "push one object onto a per-CPU magazine / array cache"),
    "object_move": (4, "move one object pointer between a magazine and a slab/array (per object)"),
    "irq_disable": (1, "local_irq_disable / local_irq_save"),
    "irq_enable": (1, "local_irq_enable / local_irq_restore"),
    "call": (10, "function call and bookkeeping of an allocator entry point"),
    "list_op": (10, "link or unlink a slab on a list, or a tree insert/remove step"),
    "slab_obj_op": (8, "take or return one object to a slab's free list"),
    # shared-state work
    "lock_acquire": (20, "uncontended spinlock acquire, line already in this CPU's cache"),
    "lock_release": (10, "spinlock release"),
    "cacheline_transfer": (100, "move a contended cache line (lock word) from another CPU"),
    "cacheline_remote_node": (200, "cache-line transfer across NUMA nodes"),
    "atomic_op": (20, "atomic bit operation / counter update on a shared line"),
    "wake_up": (200, "wake_up_all / wake_up_bit per woken waiter"),
    "context_switch": (2_000, "switch a sleeping thread back onto a CPU"),
    "wakeup_ipi": (3_000, "a thread woken onto an idle CPU: reschedule IPI and exit from idle"),
    "irq_entry": (500, "interrupt entry"),
    "irq_exit": (500, "interrupt exit"),
    "taskq_dispatch": (300, "taskq_dispatch: queue a task and wake a worker"),
    "thread_spawn": (50_000, "create a new taskq worker thread (dynamic taskq)"),
    # memory
    "page_alloc": (250, "buddy allocator: one order-0 page (scales with 2^order)"),
    "page_free": (150, "free one order-0 page (scales with 2^order)"),
    "vmalloc_per_page": (250, "vmalloc: map one page (page tables, outside vmap_area_lock)"),
    "vfree_per_page": (150, "vfree: unmap one page (outside vmap_area_lock)"),
    "vmap_area_search": (300, "alloc_vmap_area / free of a vmap_area: tree search and insert "
                              "under vmap_area_lock"),
    "vmap_purge_per_area": (100, "lazy purge: return one lazily freed vmap_area to the free "
                                 "tree under vmap_area_lock"),
    "tlb_flush_kernel_range": (5_000, "lazy purge: flush_tlb_kernel_range (IPI to every CPU)"),
    "mutex_spin_check": (20, "adaptive / optimistic-spinning mutex: a waiter's owner-running "
                             "check before it spins or blocks"),
    "reclaim_per_page": (1_000, "direct reclaim: free one clean page-cache page"),
    "kmalloc": (60, "small kmalloc for a descriptor or tracking node"),
    "emergency_lookup": (40, "look an address up in the emergency-object tree"),
}
"""Cost name -> (default ns, what it charges)."""

COST_SOURCES: dict[str, str] = {
    "magazine_pop": "estimate: a handful of instructions on L1-resident per-CPU data at ~3 GHz",
    "magazine_push": "estimate: a handful of instructions on L1-resident per-CPU data at ~3 GHz",
    "object_move": "estimate: one pointer load and store per object, L1-resident",
    "irq_disable": "vendor figure: cli costs a few cycles (Agner Fog, instruction tables)",
    "irq_enable": "vendor figure: sti / popf cost a few cycles (Agner Fog, instruction tables)",
    "call": "estimate: call, return and argument checks, ~30 instructions",
    "list_op": "estimate: list_add/list_del touch 2-3 lines that are usually cached",
    "slab_obj_op": "estimate: free-list pointer load and store in the slab",
    "lock_acquire": "vendor figure: lock cmpxchg on an L1-resident line ~18-20 cycles on Skylake "
                    "(Agner Fog, instruction tables), plus preempt_disable and the call",
    "lock_release": "estimate: a plain store plus preempt_enable",
    "cacheline_transfer": "measurement order of magnitude: core-to-core transfer of a modified "
                          "line inside one socket is tens of ns to ~100 ns (Molka et al., "
                          "PACT 2009, on Nehalem; similar on later Xeons)",
    "cacheline_remote_node": "measurement order of magnitude: a modified line from another "
                             "socket costs about twice an on-socket transfer (Molka et al., "
                             "PACT 2009)",
    "atomic_op": "vendor figure: a locked read-modify-write on a cached line (Agner Fog)",
    "wake_up": "estimate: try_to_wake_up (rq lock, enqueue_task, check_preempt_curr) "
               "takes a few hundred ns in ftrace function_graph timings on x86",
    "context_switch": "measurement: lmbench lat_ctx (McVoy and Staelin, USENIX 1996) and "
                      "later runs on x86 servers give 1-5 us per switch with cache effects",
    "wakeup_ipi": "vendor figure: intel_idle's Skylake table gives C1 exit latency 2 us and "
                  "C1E 10 us; plus about 1 us of IPI delivery (x2APIC)",
    "irq_entry": "estimate: entry, register save and irq_enter; ~1 us round trip with exit",
    "irq_exit": "estimate: irq_exit, softirq check and iret",
    "taskq_dispatch": "estimate: kmalloc-free task slot, list add under tq_lock, wake_up",
    "thread_spawn": "estimate: kthread_create plus first schedule, tens of us",
    "page_alloc": "estimate: the buddy allocator's per-CPU-list fast path, a few hundred ns "
                  "per order-0 page including zeroing avoidance",
    "page_free": "estimate: free to the per-CPU page list",
    "vmalloc_per_page": "estimate: one page-table entry plus the page allocation bookkeeping "
                        "in vmap_pages_range",
    "vfree_per_page": "estimate: clearing one page-table entry in vunmap_range",
    "vmap_area_search": "estimate: an rbtree search and insert over the vmap_area tree "
                        "(alloc_vmap_area), a few hundred ns",
    "vmap_purge_per_area": "estimate: merging one vmap_area back into the free tree",
    "tlb_flush_kernel_range": "estimate: an IPI round to every CPU (smp_call_function_many), "
                              "a few us on a two-socket server",
    "mutex_spin_check": "estimate: a read of the owner's on-CPU state (one cached line)",
    "reclaim_per_page": "estimate: shrink_page_list on a clean page-cache page, ~1 us",
    "kmalloc": "estimate: a kmalloc fast path, tens of ns",
    "emergency_lookup": "estimate: one rbtree level compare and pointer chase",
}
"""Cost name -> where its default comes from (a measurement, a paper, a vendor figure, or an
estimate with the reasoning)."""


@dataclass(frozen=True)
class CostTable:
    """Costs in ns by name; read as attributes (`costs.lock_acquire`) on hot paths."""

    values: dict[str, int]

    @classmethod
    def build(cls, overrides: dict[str, int | str] | None = None) -> CostTable:
        """Defaults with `overrides` applied; raises KeyError for an unknown cost name."""
        vals = {k: v for k, (v, _) in DEFAULT_COSTS.items()}
        for key, value in (overrides or {}).items():
            if key not in vals:
                raise KeyError(key)
            ns = parse_duration(value)
            if ns < 0:
                raise ValueError(f"cost {key} must not be negative")
            vals[key] = ns
        return cls(vals)

    def __getattr__(self, name: str) -> int:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> int:
        return self.values[name]
