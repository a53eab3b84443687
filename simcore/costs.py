"""The cost table: nanoseconds of simulated time charged for each step of kernel work.

Defaults describe a ~3 GHz x86-64 server of the 2015-2020 era. They are order-of-magnitude
figures from public measurements, not calibrations of one machine: an uncontended lock or an
atomic op ~20 ns (a locked instruction on a line in the local cache), a contended lock handing
its cache line to another core ~100 ns (cross-core transfer, ~200 ns across sockets), a
magazine/array push or pop a few ns of pointer work, page allocation from the buddy allocator
~250 ns per order-0 page, vmalloc ~250 ns per page for page-table population under the vmap
lock, interrupt entry+exit ~1 us, a context switch ~2 us (wake-up to running). Every entry can
be overridden per experiment in `[costs]`.
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
    "irq_entry": (500, "interrupt entry"),
    "irq_exit": (500, "interrupt exit"),
    "taskq_dispatch": (300, "taskq_dispatch: queue a task and wake a worker"),
    "thread_spawn": (50_000, "create a new taskq worker thread (dynamic taskq)"),
    # memory
    "page_alloc": (250, "buddy allocator: one order-0 page (scales with 2^order)"),
    "page_free": (150, "free one order-0 page (scales with 2^order)"),
    "vmalloc_per_page": (250, "vmalloc: map one page under the global vmap lock"),
    "vfree_per_page": (150, "vfree: unmap one page under the global vmap lock"),
    "reclaim_per_page": (1_000, "direct reclaim: free one clean page-cache page"),
    "kmalloc": (60, "small kmalloc for a descriptor or tracking node"),
    "emergency_lookup": (40, "look an address up in the emergency-object tree"),
}
"""Cost name -> (default ns, what it charges)."""


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
