"""`spl`: the OpenZFS SPL kmem cache. `SplPolicy` is assembled in `policy.py` from the modules
named after the seed's layers: `magazine` (alloc/free, refill, flush), `slab` (growth, shrink,
reclaim), `emergency`, `reap` (reap_now and spl-0.7 aging), `geometry` (spl_slab_size,
spl_magazine_size), `structs` and `proc` (/proc/spl/kmem/slab)."""

from policies.spl.policy import SplPolicy

__all__ = ["SplPolicy"]
