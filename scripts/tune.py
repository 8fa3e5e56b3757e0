#!/usr/bin/env python
"""Keras Tuner search: scripts/tune.py --model=RelativePerformer --dataset=fashion_mnist
--tuner=random --max_trials=10

The command lives in `relperf_tf.app.commands.tune` (also installed as `relperf-tune`).
"""

import relperf_cli

if __name__ == "__main__":
    relperf_cli.main("tune")
