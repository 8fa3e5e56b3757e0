"""Benchmark research of relperf_tf (not installed): timing, FLOP counts, the peers harness."""
