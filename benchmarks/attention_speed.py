"""Attention layers side by side: a training step of one layer, per length, backend and mode.

MultiHeadAttention, FavorAttention (its defaults, m = int(d·ln d)) and
RelativeFavorAttention with the exact and the circular factor (its defaults:
m = 2, `toeplitz_method="auto"`), in 1-D (`[batch, N, 64]`) and 2-D
(`attention_axes=(1, 2)` over `[batch, H, W, 64]` grids), bidirectional and
causal. Batch 8, dim 64, 4 heads of 16, float32; a Keras training step
(`train_on_batch` of an SGD/MSE model around the layer) compiled with
`jit_compile=True` on TensorFlow and JAX, eager on PyTorch (Keras' torch trainer
does not compile). Each row runs in a fresh process (its peak RSS is its own):
median of 5 timed steps after 2 untimed ones. Rows that cannot fit in memory
(MultiHeadAttention's [batch, heads, N, N] scores at long lengths) are recorded
as not run, with the reason.

    python benchmarks/attention_speed.py --backends=tensorflow,jax \
        --output=benchmarks/records/attention_speed.json

A later run with other rows merges into the same record (rows are keyed by
backend, layer, tokens and mode).
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import records  # noqa: E402

BATCH, DIM, HEADS, KEY_DIM = 8, 64, 4, 16
LAYERS = ("mha", "favor", "exact", "circular")
# Memory budget of one row: MultiHeadAttention keeps about 4 [batch, heads, N, N] float32
# tensors (scores, softmax, their gradients).
MEMORY_BUDGET = 16 * 2**30


def estimated_bytes(layer, tokens, batch=BATCH):
    if layer == "mha":
        return 4 * batch * HEADS * tokens * tokens * 4
    return 0


def make_layer(layer, grid):
    import keras

    from relperf_tf.layers import FavorAttention, RelativeFavorAttention

    axes = dict(attention_axes=(1, 2)) if grid else {}
    if layer == "mha":
        return keras.layers.MultiHeadAttention(HEADS, KEY_DIM, **axes)
    if layer == "favor":
        return FavorAttention(HEADS, KEY_DIM, **axes)
    return RelativeFavorAttention(HEADS, KEY_DIM, position_kernel=layer, **axes)


def measure(layer, tokens, causal, grid=None, steps=5, warmup=2, batch=BATCH):
    """(median step seconds, peak RSS MiB) of this process; `grid` (H, W) for 2-D."""
    import resource
    import time

    import keras
    import numpy as np

    shape = (batch,) + (tuple(grid) if grid else (tokens,)) + (DIM,)
    inputs = keras.Input(shape[1:], batch_size=batch)
    attention = make_layer(layer, grid)
    outputs = attention(inputs, inputs, use_causal_mask=causal)
    model = keras.Model(inputs, outputs)
    jit = keras.backend.backend() != "torch"
    model.compile(optimizer="sgd", loss="mse", jit_compile=jit)
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    y = np.zeros(shape, "float32")
    for _ in range(warmup):
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return float(np.median(times)), float(peak)


def run_row(backend, layer, tokens, causal, grid=None, timeout=1800, env=None, batch=BATCH):
    """One row in a fresh process of `backend`."""
    row = dict(backend=backend, layer=layer, tokens=tokens, causal=causal)
    if grid:
        row["grid"] = list(grid)
    need = estimated_bytes(layer, tokens, batch)
    if need > MEMORY_BUDGET:
        return dict(row, skipped=f"needs about {need / 2**30:.0f} GiB ([batch, heads, N, N])")
    code = (
        "import json, sys; sys.path.insert(0, {repo!r}); "
        "from benchmarks.attention_speed import measure; "
        "print('RESULT', json.dumps(measure({layer!r}, {tokens}, {causal}, {grid}, batch={batch})))"
    ).format(repo=records.REPO, layer=layer, tokens=tokens, causal=causal, grid=grid, batch=batch)
    environment = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu", **(env or {}))
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=environment,
        )
    except subprocess.TimeoutExpired:
        return dict(row, skipped=f"over {timeout} s")
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return dict(row, skipped=f"failed: {reason}")
    seconds, peak = json.loads(lines[-1][len("RESULT ") :])
    return dict(row, step_ms=round(1000 * seconds, 2), peak_rss_mib=round(peak))


def key(row):
    return (row["backend"], row["layer"], row["tokens"], row["causal"], tuple(row.get("grid", ())))


def merge(old_rows, new_rows):
    """New rows replace old ones of the same key; the rest are kept, in a stable order."""
    merged = {key(r): r for r in old_rows}
    merged.update({key(r): r for r in new_rows})
    order = {name: i for i, name in enumerate(LAYERS)}
    return sorted(
        merged.values(),
        key=lambda r: (
            r["backend"],
            bool(r.get("grid")),
            r["causal"],
            r["tokens"],
            order[r["layer"]],
        ),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--lengths", default="512,4096", help="1-D token counts")
    parser.add_argument("--grids", default="32,64", help="sides of the 2-D grids (H = W)")
    parser.add_argument("--modes", default="bidirectional,causal")
    parser.add_argument("--jax_x64", action="store_true", help="JAX with jax_enable_x64")
    parser.add_argument("--output", default="benchmarks/records/attention_speed.json")
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--batch", type=int, default=BATCH, help="examples per step")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f"--batch={args.batch} is not allowed; use an integer >= 1.")
    setting = dict(batch=args.batch, dim=DIM, heads=HEADS, key_dim=KEY_DIM, dtype="float32")
    old = records.read(args.output) if os.path.exists(args.output) else None
    if old and old.get("setting") != setting:
        parser.error(
            f"--output={args.output} holds rows of another setting ({old.get('setting')}); "
            "use another --output or the same --batch."
        )
    rows = []
    env = dict(JAX_ENABLE_X64="1") if args.jax_x64 else {}
    for backend in args.backends.split(","):
        label = backend + ("+x64" if backend == "jax" and args.jax_x64 else "")
        configs = [
            (n, mode == "causal", None)
            for mode in args.modes.split(",")
            for n in (int(n) for n in args.lengths.split(",") if n)
        ]
        configs += [(s * s, False, (s, s)) for s in (int(s) for s in args.grids.split(",") if s)]
        for tokens, causal, grid in configs:
            for layer in args.layers.split(","):
                row = run_row(backend, layer, tokens, causal, grid, args.timeout, env, args.batch)
                row["backend"] = label
                print(json.dumps(row), flush=True)
                rows.append(row)
    old = old or dict(sittings=[], rows=[])
    sittings = old["sittings"] + [
        records.provenance(["benchmarks/attention_speed.py"] + (argv or sys.argv[1:]))
    ]
    for row in rows:
        row["sitting"] = len(sittings) - 1
    records.write(
        args.output,
        dict(
            name=records.name_of(args.output),
            setting=setting,
            sittings=sittings,
            rows=merge(old["rows"], rows),
        ),
    )


if __name__ == "__main__":
    main()
