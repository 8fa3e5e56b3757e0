#!/usr/bin/env python
"""Export a run's best model: scripts/export.py RUN_DIR --export_dir saved_models/NAME

The command lives in `relperf_tf.app.commands.export` (also installed as `relperf-export`).
"""

import relperf_cli

if __name__ == "__main__":
    relperf_cli.main("export")
