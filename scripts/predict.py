#!/usr/bin/env python
"""Classify PNG/JPEG files with an exported model: scripts/predict.py MODEL_DIR IMAGE [IMAGE ...]
[--json]

The command lives in `relperf_tf.app.commands.predict` (also installed as `relperf-predict`).
"""

import relperf_cli

if __name__ == "__main__":
    relperf_cli.main("predict")
