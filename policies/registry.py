"""Policy registry: built-in policies plus third-party ones from the `kmemsim.policies` entry points."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from policies.base import Policy

BUILTIN = {
    "global_lock": "policies.global_lock:GlobalLockPolicy",
    "spl": "policies.spl:SplPolicy",
    "solaris": "policies.solaris:SolarisPolicy",
    "linux_slab": "policies.linux_slab:LinuxSlabPolicy",
    "slub": "policies.slub:SlubPolicy",
}


def _load(target: str) -> type[Policy]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def builtin(name: str) -> type[Policy]:
    """A built-in policy class by registry name; ModuleNotFoundError if it is not installed."""
    return _load(BUILTIN[name])


def available() -> dict[str, type[Policy]]:
    """All policies that can be loaded, by registry name."""
    out: dict[str, type[Policy]] = {}
    for name, target in BUILTIN.items():
        try:
            out[name] = _load(target)
        except ModuleNotFoundError:
            continue
    for ep in entry_points(group="kmemsim.policies"):
        out[ep.name] = ep.load()
    return out


def get(name: str) -> type[Policy]:
    """The policy class registered as `name`; KeyError if there is none."""
    pols = available()
    if name not in pols:
        raise KeyError(name)
    return pols[name]
