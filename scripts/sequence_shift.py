#!/usr/bin/env python
"""1-D shift and length tests: scripts/sequence_shift.py RUN_DIR [...] --max_offset=64
--output=sequence_shift.csv

The command lives in `relperf_tf.app.commands.sequence_shift` (also installed as
`relperf-sequence-shift`).
"""

import relperf_cli

if __name__ == "__main__":
    relperf_cli.main("sequence_shift")
