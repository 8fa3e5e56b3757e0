#!/usr/bin/env python
"""Speed, memory and approximation benchmarks; renders docs/benchmarks.md.

python scripts/benchmark.py --models=Performer,exact --image_sizes=32 --modes=train,infer

The command lives in `benchmarks/command.py` of the source checkout (benchmarks are not
installed with the package, so there is no `relperf-benchmark` console script).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import relperf_cli  # noqa: E402

if __name__ == "__main__":
    relperf_cli.set_up_process()
    from benchmarks.command import run

    run()
