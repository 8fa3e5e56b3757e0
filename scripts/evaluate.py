#!/usr/bin/env python
"""Test metrics of finished runs: scripts/evaluate.py RUN_DIR [RUN_DIR ...] --output results.csv

The command lives in `relperf_tf.commands.evaluate` (also installed as `relperf-evaluate`).
"""

from relperf_tf.commands.evaluate import run

if __name__ == "__main__":
    run()
