"""The allocator-policy contract every kmemsim policy implements.

A policy is an object-cache allocator (SPL, illumos kmem, Linux SLAB, ...) running on a simulated
`simcore.Machine`. Workloads call its object-cache API from inside simulated threads; the
experiment runner samples its `stats` and writes its `reports`.

A subclass customises the base by filling these hooks:

- `create_cache(spec)`: build the policy's cache structure (plain; runs at set-up time).
- `alloc(t, cache, flags)` / `free(t, cache, obj)`: the allocation and free paths (generators run
  by a `simcore.Thread`; they return the object address, or `None` for a failed allocation).
- `alloc_fast(t, cache, flags)` / `free_fast(t, cache, obj)` (optional): the same paths' purely
  local case (a magazine or array-cache hit with no interrupt due) as plain functions: no
  generator, no event. They return the object / True when they did the whole operation, and
  None / False, having changed nothing, when the caller must run `alloc` / `free`. They must
  charge exactly what the generator path charges for the same case.
- `reap(t, cache)` / `destroy(t, cache)`: reclaim cached memory / tear the cache down.
- `stats(cache)`: a `CacheStats` record with the common numbers every policy reports.
- `check_invariants()`: raise `InvariantError` when object conservation or a policy invariant
  is broken.
- `start()` (optional): start the policy's timers and taskqs once the machine exists.
- `reports()` (optional): extra text reports in the formats users know, by file name.
- `cpu_dead(t, cpu)` / `cpu_up_prepare(t, cpu)` / `cpu_online(t, cpu)` (optional): the CPU
  hotplug notifier actions, run by an experiment's `[[events]]` (defaults do nothing).
- `retune(t, cache, values)` (optional): a /proc/slabinfo-style write at run time; a policy
  that has one lists the keys it takes in `retune_keys`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from simcore.machine import Machine

Gen = Generator[Any, Any, Any]


KNOWN_CACHE_FLAGS = frozenset({
    # SPL / Solaris creation flags
    "KMC_NOTOUCH", "KMC_NODEBUG", "KMC_NOMAGAZINE", "KMC_NOHASH", "KMC_QCACHE", "KMC_KMEM",
    "KMC_VMEM", "KMC_KVMEM", "KMC_SLAB", "KMC_OFFSLAB", "KMC_NOEMERGENCY", "KMC_RECLAIMABLE",
    "KMC_IDENTIFIER", "KMC_PREFILL",
    # Linux SLAB creation flags
    "SLAB_HWCACHE_ALIGN", "SLAB_RECLAIM_ACCOUNT", "SLAB_PANIC", "SLAB_DESTROY_BY_RCU",
    "SLAB_CACHE_DMA", "SLAB_MEM_SPREAD",
})
"""Cache creation flags an experiment may name; each policy honours the ones it models."""


class InvariantError(AssertionError):
    """An allocator invariant (object conservation, counter consistency) does not hold."""


@dataclass(frozen=True)
class Tunable:
    """A policy tunable with the kernel's name, its default and what it does."""

    name: str
    """The kernel's name for it (module parameter, global variable or sysctl)."""
    default: Any
    """Value used when the experiment file does not set it."""
    doc: str
    """One line: what it controls, with the seed function that reads it."""
    choices: tuple[Any, ...] | None = None
    """Allowed values when the tunable is an enumeration."""
    minimum: float | None = None
    """Smallest allowed value for numbers."""

    def validate(self, value: Any) -> Any:
        """Return `value` converted to the default's type, or raise ValueError naming the rule."""
        kind = type(self.default)
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {value!r}")
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"expected an integer, got {value!r}")
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"expected a number, got {value!r}")
            value = float(value)
        elif kind is str and not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be >= {self.minimum:g}, got {value!r}")
        return value


@dataclass
class CacheSpec:
    """What an experiment asks for when it creates a cache (kmem_cache_create arguments)."""

    name: str
    size: int
    align: int = 8
    ctor_cost: int = 0
    """Constructor cost in ns, charged per object constructed (0: no constructor)."""
    dtor_cost: int = 0
    """Destructor cost in ns, charged per object destroyed (0: no destructor)."""
    flags: tuple[str, ...] = ()
    """Creation flags by kernel name (KMC_NOEMERGENCY, KMC_SLAB, KMC_KVMEM, ...)."""
    move: Callable[..., Any] | None = None
    """Solaris move callback (client behaviour), supplied by workloads; None: not movable."""


@dataclass
class CacheStats:
    """The numbers every policy reports per cache (DESIGN.md, "What every policy reports")."""

    name: str
    obj_size: int
    objs_inuse: int
    """Objects held by callers."""
    objs_cached: int
    """Objects in per-CPU magazines/arrays, depot, shared and alien arrays."""
    objs_free: int
    """Objects free in slabs."""
    objs_emergency: int = 0
    slabs: int = 0
    slabs_partial: int = 0
    slabs_empty: int = 0
    bytes_slab: int = 0
    """Memory of all slabs (pages or vmalloc areas)."""
    bytes_emergency: int = 0
    bytes_meta: int = 0
    """Per-CPU caches, magazines, descriptors."""
    objs_per_slab: int = 0
    pages_per_slab: int = 0
    limit: int = 0
    """slabinfo 'tunables' group: limit, batchcount, sharedfactor (0 where not applicable)."""
    batchcount: int = 0
    shared: int = 0
    shared_avail: int = 0
    tunables_apply: bool = True
    """False for kernels without SLAB's limit/batchcount/sharedfactor (slabinfo prints n/a)."""
    extra: dict[str, int] = field(default_factory=dict)
    """Policy-specific counters by their kernel names (skc_obj_deadlock, depot_contention...)."""

    @property
    def objs_total(self) -> int:
        """Objects in slabs (in use, cached or free); emergency objects are not slab objects."""
        return self.objs_inuse - self.objs_emergency + self.objs_cached + self.objs_free

    @property
    def bytes_requested(self) -> int:
        return self.objs_inuse * self.obj_size

    @property
    def bytes_total(self) -> int:
        return self.bytes_slab + self.bytes_emergency + self.bytes_meta

    @property
    def frag_internal(self) -> float:
        return 1.0 - self.objs_total * self.obj_size / self.bytes_slab if self.bytes_slab else 0.0

    @property
    def frag_external(self) -> float:
        return self.objs_free / self.objs_total if self.objs_total else 0.0

    @property
    def frag_cached(self) -> float:
        return self.objs_cached / self.objs_total if self.objs_total else 0.0

    @property
    def utilisation(self) -> float:
        return self.bytes_requested / self.bytes_total if self.bytes_total else 0.0

    def row(self) -> dict[str, float]:
        """Flat record for the timeline and the summary."""
        out: dict[str, float] = {
            "objs_inuse": self.objs_inuse,
            "objs_cached": self.objs_cached,
            "objs_free": self.objs_free,
            "objs_emergency": self.objs_emergency,
            "slabs": self.slabs,
            "slabs_partial": self.slabs_partial,
            "slabs_empty": self.slabs_empty,
            "bytes_requested": self.bytes_requested,
            "bytes_slab": self.bytes_slab,
            "bytes_emergency": self.bytes_emergency,
            "bytes_meta": self.bytes_meta,
            "bytes_total": self.bytes_total,
            "frag_internal": round(self.frag_internal, 6),
            "frag_external": round(self.frag_external, 6),
            "frag_cached": round(self.frag_cached, 6),
            "utilisation": round(self.utilisation, 6),
        }
        out.update(self.extra)
        return out


class Policy:
    """Base class of allocator policies; see the module docstring for the hooks."""

    name: ClassVar[str] = ""
    """Registry name used in experiment files (`policy.name`)."""
    summary: ClassVar[str] = ""
    """One line for `kmemsim policies`."""
    tunables: ClassVar[tuple[Tunable, ...]] = ()
    """Tunables with the kernel's names and defaults."""
    retune_keys: ClassVar[tuple[str, ...]] = ()
    """Keys a `retune` event sets (all of them, as one write); empty: no run-time retuning."""

    def __init__(self, machine: Machine, tunables: dict[str, Any] | None = None) -> None:
        self.machine = machine
        """The simulated machine the policy runs on."""
        self.tun: dict[str, Any] = self.resolve_tunables(tunables or {})
        """Resolved tunables: defaults overridden by the experiment."""
        self.caches: list[Any] = []
        """Caches in creation order."""
        self.cpu_is_online: list[bool] = [True] * machine.ncpus
        """cpu_online_mask; CPU hotplug events change it around the notifier calls."""

    @classmethod
    def resolve_tunables(cls, given: dict[str, Any]) -> dict[str, Any]:
        """Defaults overridden by `given`; raises KeyError/ValueError naming the bad tunable."""
        known = {tb.name: tb for tb in cls.tunables}
        out = {tb.name: tb.default for tb in cls.tunables}
        for key, value in given.items():
            if key not in known:
                raise KeyError(key)
            out[key] = known[key].validate(value)
        return out

    def cache_create(self, spec: CacheSpec) -> Any:
        """kmem_cache_create: build and remember a cache for `spec`."""
        cache = self.create_cache(spec)
        self.caches.append(cache)
        return cache

    def create_cache(self, spec: CacheSpec) -> Any:
        raise NotImplementedError

    def start(self) -> None:
        """Start timers and taskqs; called once after all caches exist."""

    def alloc(self, t: Any, cache: Any, flags: int) -> Gen:
        raise NotImplementedError

    def free(self, t: Any, cache: Any, obj: int) -> Gen:
        raise NotImplementedError

    def alloc_fast(self, t: Any, cache: Any, flags: int) -> int | None:
        """The allocation if it is purely local, else None (nothing changed)."""
        return None

    def free_fast(self, t: Any, cache: Any, obj: int) -> bool:
        """True if the free was purely local and is done, else False (nothing changed)."""
        return False

    def fast_hit_ns(self, cache: Any) -> tuple[int, int] | None:
        """(alloc, free): the ns every successful `alloc_fast` / `free_fast` on `cache`
        charges, when that is a constant of the cache (a workload then counts its fast-path
        hits instead of timing each); None when it varies."""
        return None

    def usual_hit_ns(self, cache: Any) -> tuple[int, int] | None:
        """(alloc, free): the ns most successful `alloc_fast` / `free_fast` calls on `cache`
        charge, for a cache whose hits vary in cost (`fast_hit_ns` is None). A workload
        counts the hits that charged exactly this and tallies the others by value, which
        gives the same latencies; None: no usual cost (every hit is tallied)."""
        return None

    def reap(self, t: Any, cache: Any) -> Gen:
        raise NotImplementedError

    def destroy(self, t: Any, cache: Any) -> Gen:
        raise NotImplementedError

    def stats(self, cache: Any) -> CacheStats:
        raise NotImplementedError

    def check_invariants(self) -> None:
        raise NotImplementedError

    def reports(self) -> dict[str, str]:
        """Policy-specific text reports by file name (slabinfo.txt is written for every policy)."""
        return {}

    def cpu_dead(self, t: Any, cpu: int) -> Gen:
        """CPU_DEAD: `cpu` has stopped (no thread runs on it); `t` runs on another CPU."""
        yield from ()

    def cpu_up_prepare(self, t: Any, cpu: int) -> Gen:
        """CPU_UP_PREPARE: `cpu` is about to run again (not yet online)."""
        yield from ()

    def cpu_online(self, t: Any, cpu: int) -> Gen:
        """CPU_ONLINE: `cpu` runs threads again."""
        yield from ()

    def retune(self, t: Any, cache: Any, values: dict[str, int]) -> Gen:
        """Set the `retune_keys` of `cache` at run time."""
        raise NotImplementedError(f"{self.name} has no run-time retuning")
        yield  # pragma: no cover

    def cache_name(self, cache: Any) -> str:
        """The name a cache was created with."""
        return cache.name
