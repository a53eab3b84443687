"""`linux_slab`: Linux 2.6.17 SLAB. `LinuxSlabPolicy` is assembled in `policy.py` from modules
named after mm/slab.c's paths: `alloc` (____cache_alloc, cache_alloc_refill), `grow`
(cache_grow), `free` (__cache_free, cache_flusharray, free_block), `alien` (NUMA alien caches),
`reap` (cache_reap, kmem_cache_shrink), `geometry` (cache_estimate, calculate_slab_order,
enable_cpucache), `structs` and `slabinfo`."""

from policies.linux_slab.policy import LinuxSlabPolicy

__all__ = ["LinuxSlabPolicy"]
