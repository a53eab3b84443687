"""Workload registry: the generators and trace replay that experiment files can name."""

from __future__ import annotations

import importlib

from workloads.base import Workload

BUILTIN = {
    "steady": "workloads.steady:Steady",
    "phases": "workloads.phases:Phases",
    "producer_consumer": "workloads.producer_consumer:ProducerConsumer",
    "larson": "workloads.larson:Larson",
    "mixed_lifetimes": "workloads.mixed_lifetimes:MixedLifetimes",
    "irq": "workloads.irq:IrqAlloc",
    "size_classes": "workloads.size_classes:SizeClasses",
    "pressure": "workloads.pressure:Pressure",
    "trace": "workloads.trace:TraceReplay",
    "writeback": "workloads.writeback:Writeback",
}


def available() -> dict[str, type[Workload]]:
    """All workload generators that can be loaded, by kind."""
    out: dict[str, type[Workload]] = {}
    for kind, target in BUILTIN.items():
        module, _, attr = target.partition(":")
        try:
            out[kind] = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError:
            continue
    return out


def get(kind: str) -> type[Workload]:
    """The workload class registered as `kind`; KeyError if there is none."""
    wls = available()
    if kind not in wls:
        raise KeyError(kind)
    return wls[kind]
