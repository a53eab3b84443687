"""`slub`: Linux SLUB (6.8 mm/slub.c) with the 6.18 percpu sheaves. `SlubPolicy` is assembled
in `policy.py` from modules named after SLUB's concepts: `cpu_slab` (kmem_cache_cpu and the
lockless fast paths, ___slab_alloc, flush_all), `partial` (node and cpu partial lists under
list_lock, deactivate_slab, __slab_free), `slab` (new_slab, discard_slab), `bulk`, `sheaf` and
`barn` (6.18), `geometry` (calculate_order, min_partial, set_cpu_partial), `sysfs`
(/proc/slabinfo, /sys/kernel/slab, CONFIG_SLUB_STATS) and `structs`."""

from policies.slub.policy import SlubPolicy

__all__ = ["SlubPolicy"]
