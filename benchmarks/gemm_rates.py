"""Every matrix product of the Performer's step, timed alone by each engine on this CPU.

    python benchmarks/gemm_rates.py [--engines=...] [--modes=train,infer] [--repeats=10] [--record]

The shapes are `benchmarking.step_gemms` of the reference config (dim 128,
depth 4, heads 4, m = 110, 32×32 images: 1 025 tokens; training batch 16,
inference batch 128). Each engine runs in a fresh process with 2 threads and
the commands' malloc settings, on fresh random float32 operands, and keeps the
fastest of `--repeats` calls of each product (a floor: the rest of the
machine only ever slows a call down):
- `openblas`: NumPy's `matmul` (the OpenBLAS NumPy ships), the CPU's rate;
- `torch`: `torch.matmul` (PyTorch's CPU BLAS);
- `tf-eigen` / `tf-onednn`: TensorFlow's `MatMul` kernel in a graph with
  `TF_ENABLE_ONEDNN_OPTS=0` / `1`;
- `tf-xla`: the product alone under `jit_compile=True` (XLA:CPU's dot emitter).
A product's rate is GFLOP/s (2·b·r·i·c / seconds); a mode's *GEMM time* sums
count × seconds over its products, what the step would spend in GEMMs at that
engine's rates. `--record` writes the record docs/gemm_rates.json, which
`docs/render.py` renders into docs/benchmarks.md.
"""

import argparse
import json
import os
import re
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO)
from benchmarks import child_process  # noqa: E402

ENGINES = ("openblas", "torch", "tf-eigen", "tf-onednn", "tf-xla")
REFERENCE = dict(image_size=32, dim=128, depth=4, heads=4, nb_features=110)
BATCH = {"train": 16, "infer": 128}
THREADS = 2
TUNABLES = re.search(
    r'^TUNABLES = "(.*)"', open(os.path.join(REPO, "relperf_cli.py")).read(), re.M
).group(1)


def shapes(mode):
    """`{(batch, rows, inner, cols): count}` of one step (`benchmarking.step_gemms`)."""
    from benchmarks.benchmarking import step_gemms

    return step_gemms(mode, batch_size=BATCH[mode], **REFERENCE)


def _operands(rng, shape):
    batch, rows, inner, cols = shape
    lead = (batch,) if batch > 1 else ()
    a = rng.standard_normal(lead + (rows, inner), dtype="float32")
    b = rng.standard_normal(lead + (inner, cols), dtype="float32")
    return a, b


def _timer(engine):
    """`time(a, b, repeats)`: the fastest seconds of one product on this engine."""
    import time

    if engine == "openblas":
        import numpy as np

        def run(a, b):
            return lambda: np.matmul(a, b)

    elif engine == "torch":
        import torch

        torch.set_num_threads(THREADS)

        def run(a, b):
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            return lambda: torch.matmul(ta, tb)

    else:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(1)

        def run(a, b):
            ta, tb = tf.constant(a), tf.constant(b)
            product = tf.function(lambda: tf.matmul(ta, tb), jit_compile=engine == "tf-xla")
            return lambda: product().numpy()  # a CPU call returns when its result is computed

    def time_it(a, b, repeats):
        call = run(a, b)
        call()  # compile / warm up
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - started)
        return best

    return time_it


def child(engine, shape_list, repeats):
    """Times every shape on `engine` in this process; prints one JSON line."""
    import numpy as np

    rng = np.random.default_rng(0)
    time_it = _timer(engine)
    seconds = [time_it(*_operands(rng, tuple(s)), repeats) for s in shape_list]
    print("RESULT", json.dumps(seconds))


def environment(engine):
    env = dict(
        os.environ,
        GLIBC_TUNABLES=TUNABLES,
        TF_CPP_MIN_LOG_LEVEL="2",
        OMP_NUM_THREADS=str(THREADS),
        OPENBLAS_NUM_THREADS=str(THREADS),
        PYTHONPATH=REPO,
    )
    env["TF_ENABLE_ONEDNN_OPTS"] = "0" if engine == "tf-eigen" else "1"
    return env


def measure(engine, shape_list, repeats, timeout):
    code = f"from benchmarks.gemm_rates import child; child({engine!r}, {shape_list!r}, {repeats})"
    seconds, reason = child_process.run_python(code, environment(engine), timeout)
    if seconds is None:
        raise RuntimeError(f"{engine}: {reason}")
    return seconds


def flops(shape):
    batch, rows, inner, cols = shape
    return 2.0 * batch * rows * inner * cols


def section(results, cpu):
    """The markdown lines of the section "GEMM rates"."""
    engines = results["engines"]
    lines = [
        "## GEMM rates",
        "",
        f"`benchmarks/gemm_rates.py --record` ({cpu}, {THREADS} threads): every matrix product",
        "of the reference Performer's step (dim 128, depth 4, heads 4, m = 110, 1 025 tokens;",
        "training batch 16, inference batch 128), each timed alone, fastest of "
        f"{results['repeats']} calls, one",
        "process per engine. GFLOP/s per product; in brackets the ratio to OpenBLAS (NumPy) at",
        "the same shape. *GEMM time*: count × seconds summed over the step's products.",
        "`tf-eigen` / `tf-onednn`: TensorFlow's graph `MatMul` with `TF_ENABLE_ONEDNN_OPTS=0` /",
        "`1`; `tf-xla`: the product under `jit_compile=True`. The class token's products (M or",
        "N = batch, under 0.01 GFLOP) take microseconds: timed alone, TensorFlow's per-call",
        "dispatch is most of their time, which inside a step's one graph they do not pay alone;",
        "they are under 0.5 % of the step's GEMM FLOPs.",
        "",
    ]
    for mode, rows in results["modes"].items():
        lines += [
            f"**{mode}** (batch {BATCH[mode]})",
            "",
            "| product b×(M×K)·(K×N) | count | " + " | ".join(engines) + " |",
            "|---|---|" + "---|" * len(engines),
        ]
        total = {e: 0.0 for e in engines}
        for row in rows:
            shape, count = tuple(row["shape"]), row["count"]
            cells = []
            for e in engines:
                s = row["seconds"][e]
                total[e] += count * s
                rate = flops(shape) / s / 1e9
                ratio = row["seconds"]["openblas"] / s if "openblas" in row["seconds"] else None
                cells.append(
                    f"{rate:.0f}" + (f" ({ratio:.2f})" if ratio and e != "openblas" else "")
                )
            b, m, k, n = shape
            name = (f"{b}×" if b > 1 else "") + f"({m}×{k})·({k}×{n})"
            lines.append(f"| {name} | {count} | " + " | ".join(cells) + " |")
        cells = []
        for e in engines:
            ratio = total["openblas"] / total[e] if "openblas" in total else None
            cells.append(
                f"{1000 * total[e]:.0f} ms"
                + (f" ({ratio:.2f})" if ratio and e != "openblas" else "")
            )
        lines += ["| **GEMM time** | | " + " | ".join(cells) + " |", ""]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--modes", default="train,infer")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    engines, modes = args.engines.split(","), args.modes.split(",")
    if any(e not in ENGINES for e in engines) or any(m not in BATCH for m in modes):
        parser.error(
            f"--engines must be among {','.join(ENGINES)} and --modes among train,infer "
            f"(got --engines={args.engines} --modes={args.modes})"
        )
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1 (got {args.repeats})")
    results = dict(engines=engines, repeats=args.repeats, modes={})
    for mode in modes:
        gemms = shapes(mode)
        shape_list = [list(s) for s in gemms]
        timed = {e: measure(e, shape_list, args.repeats, args.timeout) for e in engines}
        results["modes"][mode] = [
            dict(shape=s, count=gemms[tuple(s)], seconds={e: timed[e][i] for e in engines})
            for i, s in enumerate(shape_list)
        ]
    cpu = child_process.cpu_label(environment("tf-onednn"))
    results["cpu"] = cpu
    lines = section(results, cpu)
    print("\n".join(lines))
    if args.record:
        from benchmarks import records

        results["sittings"] = [dict(records.provenance(), cpu=cpu)]
        records.write(os.path.join(REPO, "docs", "gemm_rates.json"), results)
        print("recorded docs/gemm_rates.json; render it with python docs/render.py")
    return results


if __name__ == "__main__":
    main()
