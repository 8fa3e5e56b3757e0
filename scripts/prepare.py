#!/usr/bin/env python
"""Prepare a dataset offline: python scripts/prepare.py --dataset=mnist

The command lives in `relperf_tf.app.commands.prepare` (also installed as `relperf-prepare`).
"""

import relperf_cli

if __name__ == "__main__":
    relperf_cli.main("prepare")
