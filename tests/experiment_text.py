"""Test helper: the small valid experiment (2 CPUs, one 512-byte cache, steady churn, 2 ms)
that the CLI and bad-input tests break one key at a time."""

GOOD = """\
name = "t"
seed = 3
duration = "2ms"

[machine]
cpus_per_node = 2

[memory]
size = "256MiB"

[policy]
name = "global_lock"

[[caches]]
name = "buf_512"
size = 512

[[workloads]]
kind = "steady"
caches = ["buf_512"]
live_objects = 16
lifetime = { dist = "exponential", mean = "5us" }
"""
