"""slub acceptance 5: the SPL's KMC_SLAB caches run on SLUB by default (kmc_slab_allocator =
slub): `kmemsim run` of experiments/configs/spl.toml serves zio_buf_512 from the slub model and
/proc/slabinfo shows SLUB's `tunables 0 0 0`; linux_slab remains selectable."""

from __future__ import annotations

from pathlib import Path

from experiments.cli import main
from policies.slub.geometry import geometry

SPL_TOML = Path(__file__).parent.parent / "experiments" / "configs" / "spl.toml"


def _run(tmp_path, *sets):
    argv = ["run", str(SPL_TOML), "--out", str(tmp_path), "--no-progress",
            "--set", 'duration="5ms"']
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    return (tmp_path / "slabinfo.txt").read_text()


def test_spl_default_serves_a_512_byte_cache_from_slub(tmp_path):
    text = _run(tmp_path)
    assert text.startswith("slabinfo - version: 2.1\n")
    row = next(line for line in text.splitlines() if line.startswith("zio_buf_512 "))
    fields = row.split()
    g = geometry(512, nr_cpus=8)  # spl.toml: 8 CPUs -> order 2, 32 objects (calculate_order)
    assert fields[3:6] == ["512", str(g.objects), str(g.pages)] == ["512", "32", "4"]
    assert " : tunables    0    0    0 : slabdata " in row
    sysfs = (tmp_path / "sys_kernel_slab.txt").read_text()
    assert "/sys/kernel/slab/zio_buf_512/order:2\n" in sysfs
    assert "/sys/kernel/slab/zio_buf_512/objs_per_slab:32\n" in sysfs
    assert "zio_buf_131072" not in text  # KMC_KVMEM: the SPL's own slabs, not the kernel's


def test_spl_can_still_run_its_kmc_slab_caches_on_linux_slab(tmp_path):
    text = _run(tmp_path, 'policy.tunables.kmc_slab_allocator="linux_slab"')
    # 2.6.17 SLAB without STATS: the plain 2.1 layout with enable_cpucache's tunables for a
    # 512-byte object (limit 54, batchcount 27, shared 8), not SLUB's 0 0 0
    assert text.startswith("slabinfo - version: 2.1\n")
    assert ": tunables   54   27    8 :" in text
    assert not (tmp_path / "sys_kernel_slab.txt").exists()
