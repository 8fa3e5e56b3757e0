"""The 1-D exact factor's speed and memory against content-only FAVOR+, per sequence length.

One attention layer (dim 64, 4 heads of 16, m = 4 random features: the
shipped exact models' setting), batch 1, float32, a training step (forward,
gradients of the inputs and weights) as a TensorFlow graph, each
configuration in a fresh process (peak RSS is the process's own):
- `favor`: `FavorAttention` (content only, no positions),
- `exact-dense` / `exact-fft`: `RelativeFavorAttention(position_kernel="exact")`
  with the dense Toeplitz table or the FFT,
each bidirectional and causal. `python benchmarks/sequence_factor.py
--lengths=1024,4096,16384,65536` (or `scripts/benchmark.py --sequence_lengths=…`)
writes the rows into docs/sequence_factor.json and the section "1-D exact
factor" of docs/benchmarks.md.
"""

import json
import os
import resource
import subprocess
import sys
import time

VARIANTS = ("favor", "exact-dense", "exact-fft")
DIM, HEADS, FEATURES = 64, 4, 4
# The dense table is heads·T·S float32 (and as much again for its gradient).
DENSE_MAX_BYTES = 6 * 2**30


def dense_table_bytes(length):
    return 2 * HEADS * length * length * 4


def measure(variant, length, causal, steps=5):
    """Seconds per training step (median of `steps`) and the peak RSS in MiB, in this process."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import numpy as np
    import tensorflow as tf

    from relperf_tf.layers import FavorAttention, RelativeFavorAttention

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if variant == "favor":
        layer = FavorAttention(HEADS, nb_features=FEATURES, feature_redraw_interval=0)
    else:
        layer = RelativeFavorAttention(
            HEADS,
            position_kernel="exact",
            pos_scales=4,
            nb_features=FEATURES,
            feature_redraw_interval=0,
            toeplitz_method=variant.split("-")[1],
        )
    x = tf.constant(np.random.default_rng(0).normal(size=(1, length, DIM)).astype("float32"))
    layer(x[:, :8], x[:, :8])  # build

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x, x, use_causal_mask=causal)))
        return tape.gradient(loss, [x] + layer.trainable_weights)

    step(x)  # trace and warm up
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        [g.numpy() for g in step(x)]
        times.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return float(np.median(times)), peak, peak - baseline


def run_config(variant, length, causal, timeout=900):
    """One configuration in a fresh process: a result row (or why it did not run)."""
    row = dict(variant=variant, tokens=length, causal=causal)
    if variant == "exact-dense" and dense_table_bytes(length) > DENSE_MAX_BYTES:
        gib = dense_table_bytes(length) / 2**30
        return dict(row, skipped=f"dense table and its gradient: {gib:.0f} GiB")
    code = (
        "import json, sys; sys.path.insert(0, {repo!r}); "
        "from benchmarks.sequence_factor import measure; "
        "print('RESULT', json.dumps(measure({variant!r}, {length}, {causal})))"
    ).format(
        repo=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        variant=variant,
        length=length,
        causal=causal,
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return dict(row, skipped=f"over {timeout} s")
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1][:160]
        return dict(row, skipped=f"failed: {reason}")
    seconds, peak, added = json.loads(lines[-1][len("RESULT ") :])
    return dict(
        row,
        step_seconds=seconds,
        sequences_per_s=1.0 / seconds,
        peak_rss_mib=peak,
        added_rss_mib=added,
    )


def growth(rows):
    """Step-time growth per 4× tokens for each (variant, causal) series."""
    out = {}
    for row in rows:
        if "step_seconds" not in row:
            continue
        previous = next(
            (
                r
                for r in rows
                if r["variant"] == row["variant"]
                and r["causal"] == row["causal"]
                and r["tokens"] * 4 == row["tokens"]
                and "step_seconds" in r
            ),
            None,
        )
        if previous:
            out[(row["variant"], row["causal"], row["tokens"])] = (
                row["step_seconds"] / previous["step_seconds"]
            )
    return out


def section(rows, cpu):
    """The markdown lines of the "1-D exact factor" section."""
    ratios = growth(rows)
    lines = [
        f"One attention layer (dim {DIM}, {HEADS} heads of {DIM // HEADS}, m = {FEATURES}),",
        "batch 1, float32, a training step (forward + gradients) as a TensorFlow graph, each row",
        f"in a fresh process; CPU: {cpu}.",
        "`favor`: content-only FAVOR+; `exact-dense` / `exact-fft`: the exact 1-D relative",
        "factor by the dense Toeplitz table or by FFT (`toeplitz_attention`). Growth: step time",
        "over the row with 4× fewer tokens (N log N predicts 4.0–4.8, N² 16). `auto` uses the",
        "dense table up to 2048² query·key pairs: it is exact, where the FFT loses the factor's",
        "small entries (a causal model's early tokens can then be mis-normalised); pass",
        "`toeplitz_method='fft'` for speed at any length.",
        "",
        "| variant | causal | tokens | step ms | sequences/s | peak RSS MiB | growth per 4× |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "step_seconds" not in row:
            lines.append(
                f"| {row['variant']} | {row['causal']} | {row['tokens']} | — | — | — | "
                f"not run: {row['skipped']} |"
            )
            continue
        ratio = ratios.get((row["variant"], row["causal"], row["tokens"]))
        lines.append(
            f"| {row['variant']} | {row['causal']} | {row['tokens']} | "
            f"{1000 * row['step_seconds']:.1f} | {row['sequences_per_s']:.2f} | "
            f"{row['peak_rss_mib']:.0f} | {'' if ratio is None else f'{ratio:.1f}×'} |"
        )
    return lines


def run(lengths, variants=VARIANTS, output=None, markdown=None, timeout=900):
    """Measures every (variant, length, causal), prints each row, and records them."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks import benchmarking, report

    rows = []
    for causal in (False, True):
        for variant in variants:
            for length in lengths:
                row = run_config(variant, length, causal, timeout)
                print(json.dumps(row), flush=True)
                rows.append(row)
    cpu = benchmarking.cpu_label()
    if output:
        with open(output, "w") as f:
            json.dump(dict(cpu=cpu, rows=rows), f, indent=1)
    if markdown:
        report.replace_section(
            markdown, report.SEQUENCE_SECTION, ["## 1-D exact factor", ""] + section(rows, cpu)
        )
    return rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1024,4096,16384,65536")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--output", default=None, help="results JSON to merge the rows into")
    parser.add_argument("--markdown", default=None, help="docs/benchmarks.md to update")
    parser.add_argument("--timeout", type=int, default=900)
    args = parser.parse_args()
    run(
        [int(n) for n in args.lengths.split(",")],
        args.variants.split(","),
        args.output,
        args.markdown,
        args.timeout,
    )
