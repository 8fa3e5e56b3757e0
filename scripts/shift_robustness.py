#!/usr/bin/env python
"""Shift robustness: scripts/shift_robustness.py RUN_DIR|SAVED_MODEL [...] --labels 1 --max_shift 8
--output shift.csv --plot shift.png

The command lives in `relperf_tf.app.commands.shift` (also installed as `relperf-shift`).
"""

import relperf_cli

if __name__ == "__main__":
    relperf_cli.main("shift")
