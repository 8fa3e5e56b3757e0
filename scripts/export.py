#!/usr/bin/env python
"""Export a run's best model: scripts/export.py RUN_DIR --export_dir saved_models/NAME

The command lives in `relperf_tf.commands.export` (also installed as `relperf-export`).
"""

from relperf_tf.commands.export import run

if __name__ == "__main__":
    run()
