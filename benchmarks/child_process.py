"""One measurement in a fresh Python process: its `RESULT <json>` line, or why there is none."""

import json
import os
import subprocess
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def run_python(code, env, timeout):
    """Runs `code` with `env` from the repository; returns `(result, None)` with the JSON of its
    last `RESULT ` line, or `(None, reason)` (the last line of its stderr) when it printed none or
    failed."""
    done = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {REPO!r}); {code}"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        return None, (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
    return json.loads(lines[-1][len("RESULT ") :]), None


def cpu_label(env, timeout=300):
    """`benchmarking.cpu_label()` read in a child (the caller stays free of TensorFlow)."""
    code = "import json; from benchmarks.benchmarking import cpu_label; "
    code += "print('RESULT', json.dumps(cpu_label()))"
    label, reason = run_python(code, env, timeout)
    return label if label is not None else f"unknown CPU ({reason})"
