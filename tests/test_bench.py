"""`kmemsim bench`'s point set (issue 17): every policy at 256 B and 32 KiB, the SPL with
spl_kmem_cache_slab_limit = 0 so its own magazines serve the 256 B cache, and the JSON rows
carry object_size."""

from __future__ import annotations

import json
from pathlib import Path

from experiments import bench
from experiments.bench import BenchPoint, experiment, main, points
from experiments.config import validate
from experiments.run import build
from policies.registry import available


def test_quick_has_both_sizes_at_64_cpus_for_every_policy():
    pts = points(quick=True)
    want = {(p, size) for p in available() for size in (256, 32768)}
    assert {(p.policy, p.object_size) for p in pts if p.cpus == 64
            and p.workload == "steady"} == want


def test_256_byte_caches_have_the_kernels_deepest_per_cpu_layers():
    def cache(policy: str):
        exp = validate(experiment(BenchPoint(policy, "steady", 4, 1000, 256), 10**9),
                       Path("bench.toml"))
        return build(exp).caches["bench_256"]

    # illumos kmem_magtype: 256-byte buffers get the 7-round magazine type
    assert cache("solaris").cache_magtype.mt_magsize == 7
    # Linux enable_cpucache: objects up to 256 bytes get limit 120, batchcount (120 + 1) / 2
    slab = cache("linux_slab")
    assert (slab.limit, slab.batchcount) == (120, 60)
    # SPL: no KMC_SLAB delegate; spl_magazine_size gives 256 rounds to objects <= PAGE_SIZE / 4
    spl = cache("spl")
    assert spl.mags[0].size == 256


def test_json_rows_carry_the_object_size(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(False, out, ["global_lock"], [2], 300, "steady", [256]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [(r["policy"], r["cpus"], r["object_size"]) for r in rows] == [("global_lock", 2, 256)]
    assert "256" in capsys.readouterr().out


def test_a_window_after_a_warm_up_that_did_not_settle_is_marked(monkeypatch):
    # at 64 CPUs the SPL's magazines and slabs fill for about 5 ms: a warm-up cut at two
    # ticks still sees the pages in use grow, so its window measures growth and says so
    monkeypatch.setattr(bench, "WARM_TICKS_MAX", 1)
    grown = bench._measure(BenchPoint("spl", "steady", 64, 2000, 32768))
    assert not grown.settled
    assert "growing" in bench.format_table([grown])
    monkeypatch.setattr(bench, "WARM_TICKS_MAX", 16)
    steady = bench._measure(BenchPoint("spl", "steady", 64, 2000, 32768))
    assert steady.settled and "growing" not in bench.format_table([steady])
