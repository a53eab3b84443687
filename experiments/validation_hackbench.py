"""Check 9 of `kmemsim validate`: SLUB's per-CPU partial lists against node list_lock
contention under a hackbench-like send/receive workload (the 2011 per-CPU partial series,
https://lkml.org/lkml/2011/6/20/222), and the 6.18 sheaves on the same workload (sheaves v4,
2026-02: "performance of the percpu partial list and the sheaves mechanism is roughly the
same").

The workload is the validation file's producer_consumer experiment: sender CPUs allocate a
message's sk_buff head (skbuff_head_cache) and data (kmalloc-512), a receiver CPU frees both;
it runs with and without CONFIG_SLUB_CPU_PARTIAL, and with sheaves (cpu partial off), on the
file's machine (contended) and on one sender and one receiver (uncontended)."""

from __future__ import annotations

import copy
from typing import Any

from experiments.validation import Check

VARIANTS: dict[str, dict[str, Any]] = {
    "no_partial": {"CONFIG_SLUB_CPU_PARTIAL": False},
    "partial": {"CONFIG_SLUB_CPU_PARTIAL": True},
    "sheaves": {"CONFIG_SLUB_CPU_PARTIAL": False},
}
"""Tunables per variant (sheaves also get the file's sheaf_capacity)."""


def run_variant(check: Check, variant: str, cpus: int) -> dict[str, Any]:
    """One run of the check's experiment on `cpus` CPUs (half senders, half receivers);
    returns messages per simulated second and the lock wait shares."""
    from experiments.config import validate
    from experiments.run import run_experiment

    data = copy.deepcopy(check.base)
    data.setdefault("machine", {})["cpus_per_node"] = cpus
    tun = data.setdefault("policy", {}).setdefault("tunables", {})
    tun.update(VARIANTS[variant])
    if variant == "sheaves":
        tun["sheaf_capacity"] = check.params["sheaf_capacity"]
    wl = data["workloads"][0]
    wl["producers"] = list(range(cpus // 2))
    wl["consumers"] = list(range(cpus // 2, cpus))
    s = run_experiment(validate(data, check.path), None).summary
    cpu_ns = s["end_ns"] * cpus
    locks = s.get("locks", {})

    def share(suffix: str) -> float:
        return sum(v["waittime_total_ns"] for k, v in locks.items()
                   if k.endswith(suffix)) / cpu_ns

    messages = s["ops"]["frees"] / len(wl["caches"])
    return {"messages_per_s": messages * 1e9 / s["end_ns"],
            "list_lock_share": share("list_lock"), "barn_lock_share": share("barn_lock"),
            "list_lock_contentions": sum(v["contentions"] for k, v in locks.items()
                                         if k.endswith("list_lock"))}
