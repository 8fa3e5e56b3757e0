#!/usr/bin/env python
"""Test metrics of finished runs: scripts/evaluate.py RUN_DIR [RUN_DIR ...] --output results.csv

The command lives in `relperf_tf.app.commands.evaluate` (also installed as `relperf-evaluate`).
"""

import relperf_cli

if __name__ == "__main__":
    relperf_cli.main("evaluate")
