#!/usr/bin/env python
"""Keras Tuner search: scripts/tune.py --model=RelativePerformer --dataset=fashion_mnist
--tuner=random --max_trials=10

The command lives in `relperf_tf.commands.tune` (also installed as `relperf-tune`).
"""

from relperf_tf.commands.tune import run

if __name__ == "__main__":
    run()
