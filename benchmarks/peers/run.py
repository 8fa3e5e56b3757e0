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
import workload  # noqa: E402

# The malloc settings every runner gets (relperf_tf/fast_malloc.py; read, not
# imported: importing relperf_tf would load TensorFlow into this orchestrator).
TUNABLES = re.search(
    r'^TUNABLES = "(.*)"', open(os.path.join(REPO, "relperf_tf", "fast_malloc.py")).read(), re.M
).group(1)

# name: (python of its virtualenv, runner, settings always run, settings run only with native bf16
# matmuls)
IMPLEMENTATIONS = {
    "relperf_tf": (
        os.path.join(REPO, ".venv", "bin", "python"),
        "run_relperf_tf.py",
        ("plain", "xla"),
        (),
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
flags.DEFINE_string("output", os.path.join(REPO, "docs", "peers.json"), "Results JSON (replaced).")
flags.DEFINE_string(
    "report",
    os.path.join(REPO, "docs", "benchmarks.md"),
    "Markdown file whose peers section is rewritten.",
)
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
    if FLAGS.timeout < 1:
        fail(f"flag --timeout={FLAGS.timeout} is not allowed; use an integer >= 1 (seconds).")
    missing = [
        name for name in FLAGS.implementations if not os.path.exists(IMPLEMENTATIONS[name][0])
    ]
    if missing:
        fail(f"no virtualenv for {','.join(missing)}; run `bash benchmarks/peers/setup.sh` first.")
    import peer_table  # imports relperf_tf (and TensorFlow): after the checks

    cpu = peer_table.cpu_info()
    rows = []
    for mode in FLAGS.modes:
        for name in FLAGS.implementations:
            python, runner, settings, bf16_settings = IMPLEMENTATIONS[name]
            for setting in settings + (bf16_settings if cpu["native_bf16"] else ()):
                print(f"{name} {mode} {setting} ...", flush=True)
                start = time.time()
                row = dict(
                    dict(implementation=name, mode=mode, setting=setting),
                    **run_one(python, runner, mode, setting),
                )
                row.update(name=name, wall_s=round(time.time() - start, 1))
                print(
                    "   ",
                    {
                        k: (round(v, 2) if isinstance(v, float) else v)
                        for k, v in row.items()
                        if k != "window_ms"
                    },
                    flush=True,
                )
                rows.append(row)
    skipped = (
        []
        if cpu["native_bf16"]
        else ["performer_pytorch bf16 (no native bf16 matmuls on this CPU)"]
    )
    results = dict(
        cpu=cpu,
        workload=workload.WORKLOAD,
        batch=workload.BATCH,
        timing=workload.TIMING,
        threads=workload.THREADS,
        date=time.strftime("%Y-%m-%d"),
        rows=rows,
        skipped=skipped,
    )
    with open(FLAGS.output + ".tmp", "w") as f:
        json.dump(results, f, indent=2)
    os.replace(FLAGS.output + ".tmp", FLAGS.output)
    peer_table.write_section(FLAGS.report, peer_table.render(results))
    print(f"wrote {FLAGS.output} and the peers section of {FLAGS.report}")


if __name__ == "__main__":
    app.run(main)
