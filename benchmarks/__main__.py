"""`python -m benchmarks`: run every benchmark module in turn; each prints its table.

Needs the local stack's environment (`make bench` sources `.testenv/env`). Each
module runs in a process of its own, so that none inherits another's state (the
throughput run pins the C allocator's thresholds, and leaves memory and garbage
behind). A module that fails is reported and the others still run; the exit status
says whether all of them ran.
"""

from __future__ import annotations

import subprocess
import sys

#: The benchmark modules, each with a `run()` that prints its own table.
MODULES = [
    "benchmarks.throughput",
    "benchmarks.latency",
    "benchmarks.api_calls",
]


def main() -> int:
    failed = []
    for name in MODULES:
        print(f"== {name}", flush=True)
        if subprocess.run([sys.executable, "-m", name], check=False).returncode != 0:
            failed.append(name)
        print(flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
