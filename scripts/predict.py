#!/usr/bin/env python
"""Classify PNG/JPEG files with an exported model: scripts/predict.py MODEL_DIR IMAGE [IMAGE ...]
[--json]

The command lives in `relperf_tf.commands.predict` (also installed as `relperf-predict`).
"""

from relperf_tf.commands.predict import run

if __name__ == "__main__":
    run()
