"""/proc accounting of the harness, on real processes."""

import os
import subprocess
import sys
import time

from bench.procs import (
    TreeSampler,
    cpu_seconds,
    load_average,
    parse_stat,
    pss_bytes,
    rss_bytes,
    tree_pids,
)


class TestProcs:
    def test_parse_stat_with_awkward_command_name(self) -> None:
        rest = " ".join(["S", "42"] + ["0"] * 9 + ["150", "50", "7", "3"] + ["0"] * 6 + ["99"])
        st = parse_stat(f"1234 (a b) (c)) {rest}")
        assert st["pid"] == 1234 and st["comm"] == "a b) (c)" and st["ppid"] == 42
        assert (st["utime"], st["stime"], st["cutime"], st["cstime"]) == (150, 50, 7, 3)
        assert st["rss_pages"] == 99

    def test_own_stat_parses(self) -> None:
        with open(f"/proc/{os.getpid()}/stat") as f:
            st = parse_stat(f.read())
        assert st["pid"] == os.getpid() and st["ppid"] == os.getppid()

    def test_tree_follows_children_and_sums_them(self) -> None:
        child = subprocess.Popen([sys.executable, "-c",
                                  "import time; x = bytearray(30_000_000); time.sleep(30)"])
        try:
            deadline = time.monotonic() + 10
            while rss_bytes(child.pid) < 30_000_000 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert child.pid in tree_pids(os.getpid())
            assert rss_bytes(os.getpid()) >= rss_bytes(child.pid) >= 30_000_000
            assert pss_bytes(os.getpid()) >= pss_bytes(child.pid) >= 25_000_000
        finally:
            child.kill()
            child.wait()

    def test_sampler_sees_cpu_and_peak(self) -> None:
        with TreeSampler(os.getpid(), interval=0.01) as sampler:
            end = time.process_time() + 0.3
            while time.process_time() < end:
                pass
            blob = bytearray(50_000_000)
            # Held until the sampler has seen it (RSS each sample, PSS every fifth): a fixed
            # 0.1 s could pass without a PSS sample when the machine is loaded.
            deadline = time.monotonic() + 30
            while (sampler.peak < sampler.start_rss + 40_000_000
                   or sampler.peak_pss < 40_000_000) and time.monotonic() < deadline:
                time.sleep(0.01)
            del blob
        usage = sampler.usage
        assert usage is not None
        assert usage.cpu_s >= 0.25
        assert usage.rss_growth_bytes >= 40_000_000
        assert usage.peak_pss_bytes >= 40_000_000
        assert cpu_seconds(os.getpid()) > 0
        assert len(load_average()) == 3
