#!/usr/bin/env python
"""Runs relperf_tf and its peers on one workload, one after another, and writes the side-by-side
table.

    bash benchmarks/peers/setup.sh          # once: one virtualenv per peer
    .venv/bin/python benchmarks/peers/run.py

Each (implementation, mode, setting) runs in a fresh process of its own
virtualenv with the same thread counts, malloc settings, random data and
timing method (`workload.py`); results go to docs/peers.json and to the
peers section of docs/benchmarks.md (between its markers; the rest of the
file is left as it is).
"""

import json
import os
import re
import subprocess
import sys
import time

from absl import app, flags

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(1, REPO)
import workload  # noqa: E402

from benchmarks import records, report  # noqa: E402  (no TensorFlow: the orchestrator stays light)

# The malloc settings every runner gets (relperf_cli.py; read, not
# imported: importing relperf_tf would load TensorFlow into this orchestrator).
TUNABLES = re.search(
    r'^TUNABLES = "(.*)"', open(os.path.join(REPO, "relperf_cli.py")).read(), re.M
).group(1)

# name: (python of its virtualenv, runner, settings always run, settings run only with native bf16
# matmuls)
IMPLEMENTATIONS = {
    "relperf_tf": (
        os.path.join(REPO, ".venv", "bin", "python"),
        "run_relperf_tf.py",
        ("plain", "xla"),
        ("bf16", "bf16-xla"),
    ),
    "model_garden": (
        os.path.join(HERE, ".venvs", "model_garden", "bin", "python"),
        "run_model_garden.py",
        ("plain", "xla"),
        (),
    ),
    "performer_pytorch": (
        os.path.join(HERE, ".venvs", "performer_pytorch", "bin", "python"),
        "run_performer_pytorch.py",
        ("eager", "compile"),
        ("bf16",),
    ),
}

flags.DEFINE_list("implementations", list(IMPLEMENTATIONS), f"Any of {','.join(IMPLEMENTATIONS)}.")
flags.DEFINE_list("modes", list(workload.BATCH), "train and/or infer.")
flags.DEFINE_integer("timeout", 900, "Seconds allowed per configuration.")
flags.DEFINE_integer(
    "rounds",
    1,
    "Run every configuration this many times, round after round (so each sees every period of "
    "the machine's speed); a row is its median round.",
)
flags.DEFINE_string("output", os.path.join(REPO, "docs", "peers.json"), "Results JSON (replaced).")
FLAGS = flags.FLAGS


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def run_one(python, runner, mode, setting):
    env = dict(os.environ, GLIBC_TUNABLES=TUNABLES, PYTHONPATH=REPO)
    try:
        done = subprocess.run(
            [python, os.path.join(HERE, runner), mode, setting],
            capture_output=True,
            text=True,
            timeout=FLAGS.timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return dict(error=f"timed out after {FLAGS.timeout} s")
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}, no output"])[-1]
    return dict(error=tail[:300])


def median_round(runs):
    """The round with the median step time (errors only if every round failed), with every
    round's images/s."""
    good = sorted((r for r in runs if "error" not in r), key=lambda r: r["ms_per_step"])
    if not good:
        return runs[-1]
    return dict(good[(len(good) - 1) // 2], round_images_per_s=[r["images_per_s"] for r in good])


def kept_rows(path, cpu, replaced):
    """Rows of an earlier run on the same CPU model for (mode, implementation) pairs this run does
    not measure (e.g. `--modes=train` keeps the inference rows)."""
    try:
        with open(path) as f:
            earlier = json.load(f)
    except (OSError, ValueError):
        return []
    same_cpu = all(
        earlier.get("cpu", {}).get(k) == cpu[k] for k in ("model_name", "family", "model")
    )
    if not same_cpu:
        return []
    return [
        dict(r, date=r.get("date", earlier.get("date")))
        for r in earlier.get("rows", [])
        if (r["mode"], r["name"]) not in replaced
    ]


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; use flags only.")
    for name in FLAGS.implementations:
        if name not in IMPLEMENTATIONS:
            fail(
                f"flag --implementations: {name!r} is not allowed; use any of "
                f"{','.join(IMPLEMENTATIONS)}."
            )
    for mode in FLAGS.modes:
        if mode not in workload.BATCH:
            fail(f"flag --modes: {mode!r} is not allowed; use any of {','.join(workload.BATCH)}.")
    if FLAGS.rounds < 1:
        fail(f"flag --rounds={FLAGS.rounds} is not allowed; use an integer >= 1.")
    if FLAGS.timeout < 1:
        fail(f"flag --timeout={FLAGS.timeout} is not allowed; use an integer >= 1 (seconds).")
    missing = [
        name for name in FLAGS.implementations if not os.path.exists(IMPLEMENTATIONS[name][0])
    ]
    if missing:
        fail(f"no virtualenv for {','.join(missing)}; run `bash benchmarks/peers/setup.sh` first.")
    import peer_table  # imports relperf_tf (and TensorFlow): after the checks

    cpu = peer_table.cpu_info()
    configurations = [
        (mode, name, setting)
        for mode in FLAGS.modes
        for name in FLAGS.implementations
        for setting in IMPLEMENTATIONS[name][2]
        + (IMPLEMENTATIONS[name][3] if cpu["native_bf16"] else ())
    ]
    measured = {c: [] for c in configurations}
    for round_index in range(FLAGS.rounds):
        for mode, name, setting in configurations:
            python, runner = IMPLEMENTATIONS[name][:2]
            print(
                f"[round {round_index + 1}/{FLAGS.rounds}] {name} {mode} {setting} ...", flush=True
            )
            start = time.time()
            row = dict(
                dict(implementation=name, mode=mode, setting=setting),
                **run_one(python, runner, mode, setting),
            )
            row.update(name=name, wall_s=round(time.time() - start, 1))
            report.print_progress(row, 2, hidden="window_ms")
            measured[(mode, name, setting)].append(row)
    date = time.strftime("%Y-%m-%d")
    rows = [dict(median_round(runs), date=date) for runs in measured.values()]
    rows += kept_rows(FLAGS.output, cpu, {(mode, name) for mode, name, _ in configurations})
    skipped = (
        []
        if cpu["native_bf16"]
        else [
            f"{name} {','.join(IMPLEMENTATIONS[name][3])} (no native bf16 matmuls on this CPU)"
            for name in FLAGS.implementations
            if IMPLEMENTATIONS[name][3]
        ]
    )
    results = dict(
        sittings=[records.provenance()],
        cpu=cpu,
        workload=workload.WORKLOAD,
        batch=workload.BATCH,
        timing=workload.TIMING,
        threads=workload.THREADS,
        date=date,
        rounds=FLAGS.rounds,
        rows=rows,
        skipped=skipped,
    )
    records.write(FLAGS.output, results)
    print("\n".join(peer_table.render(results)))
    print(f"recorded {FLAGS.output}; render it with python docs/render.py")


if __name__ == "__main__":
    app.run(main)
