#!/usr/bin/env python
"""Train one model: python scripts/train.py --model=NoposPerformer --dataset=fashion_mnist

The command lives in `relperf_tf.commands.train` (also installed as `relperf-train`).
"""

from relperf_tf.commands.train import run

if __name__ == "__main__":
    run()
