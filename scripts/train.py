#!/usr/bin/env python
"""Train one model: python scripts/train.py --model=NoposPerformer --dataset=fashion_mnist

The command lives in `relperf_tf.app.commands.train` (also installed as `relperf-train`).
"""

import relperf_cli

if __name__ == "__main__":
    relperf_cli.main("train")
