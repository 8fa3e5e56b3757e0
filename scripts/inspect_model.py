#!/usr/bin/env python
"""Pictures of what a model learned: scripts/inspect_model.py RUN_DIR|PRESET|MODEL.keras

The command lives in `relperf_tf.app.commands.inspect_model` (also installed as `relperf-inspect`).
"""

import relperf_cli

if __name__ == "__main__":
    relperf_cli.main("inspect")
