#!/usr/bin/env python
"""Speed, memory and approximation benchmarks; renders docs/benchmarks.md.

python scripts/benchmark.py --models=Performer,exact --image_sizes=32 --modes=train,infer


The command lives in `relperf_tf.commands.benchmark` (also installed as `relperf-benchmark`).
"""

from relperf_tf.commands.benchmark import run

if __name__ == "__main__":
    run()
