#!/usr/bin/env python3
"""Where a stress-test run's cycles go, from `perf record` data, during the load only.

    perf record -k realtime -F 999 -o run.data -- stress-test ... --report run.json
    stress-test/benches/profile-breakdown.py run.data run.json

`-k realtime` stamps samples with the wall clock, so the window is the report's
[started_unix_s, started_unix_s + elapsed_s]: setup and cleanup are left out. Samples are sorted
into buckets by their leaf symbol (first matching bucket wins).
"""

import collections
import json
import subprocess
import sys

# First match wins: (bucket, substrings of the leaf symbol or its DSO).
BUCKETS = [
    ("kernel: sleep/wake-up (epoll, futex, context switch)",
     ["finish_task_switch", "schedule", "futex", "epoll", "try_to_wake_up", "_raw_spin_unlock_irq",
      "irqentry_exit", "hrtimer", "switch_to", "pick_next", "enqueue", "dequeue", "update_curr"]),
    ("kernel: TCP/IP over loopback", ["tcp_", "ip_", "skb", "sock", "net_", "__dev_queue", "inet",
                                      "loopback", "napi", "softirq", "copy_to_iter", "copy_from_iter",
                                      "_copy_", "csum", "__check_object_size"]),
    ("kernel: page faults, memory", ["page", "folio", "mm_", "_mm", "clear_page", "lru", "vma"]),
    ("kernel: syscall entry/exit, other", ["[kernel"]),
    ("TLS (rustls, ring: crypto and records)", ["rustls", "ring_core", "ring::", "tokio_rustls",
                                                "gcm", "aes", "curve25519", "nistz256", "sha"]),
    ("HTTP (hyper, h2, httparse, http)", ["hyper", "h2::", "httparse", "http::", "want::"]),
    ("tokio runtime, timers, mio", ["tokio::", "mio::", "clock_gettime", "vdso"]),
    ("malloc/free, memcpy", ["malloc", "free", "_int_", "unlink_chunk", "memmove", "memcpy",
                             "memset", "realloc", "consolidate", "tcache"]),
    ("histograms", ["hdrhistogram"]),
    ("arrival schedule (exp/log, picker)", ["arrivals", "ieee754", "log", "exp", "rand", "pcg",
                                             "WeightedPicker"]),
    ("stress-test request path", ["stress_test"]),
    ("bytes, futures, other Rust", ["bytes::", "futures", "core::", "alloc::", "std::"]),
]


def bucket(sym, dso):
    for name, keys in BUCKETS:
        if any(k in sym or k in dso for k in keys):
            return name
    return "other"


def main(data, report):
    with open(report) as f:
        r = json.load(f)
    start, end = r["started_unix_s"], r["started_unix_s"] + r["elapsed_s"]
    # Lines read `TIME: IP SYMBOL (DSO)`.
    out = subprocess.run(["perf", "script", "-i", data, "-F", "time,ip,sym,dso"],
                         capture_output=True, text=True, check=True).stdout
    counts = collections.Counter()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        t = float(parts[0].rstrip(":"))
        if start <= t <= end:
            counts[bucket(" ".join(parts[2:-1]), parts[-1])] += 1
    total = sum(counts.values())
    if total == 0:
        sys.exit("no sample within the load: record with `perf record -k realtime`")
    print(f"{total} samples in {end - start:.1f} s of load")
    for name, n in counts.most_common():
        print(f"{100 * n / total:5.1f} %  {name}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
