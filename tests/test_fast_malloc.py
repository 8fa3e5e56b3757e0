"""Commands restart once with glibc malloc settings, and respect the user's own; importing the
library changes nothing in the process."""

import json
import os
import platform
import subprocess
import sys

import pytest

import relperf_cli as fast_malloc
from tests.conftest import REPO

# Loads relperf_cli.py alone (no package, no TensorFlow) and restarts: a script
# file, as the restart re-runs sys.argv.
PROBE = (
    "import importlib.util, os, sys\n"
    "spec = importlib.util.spec_from_file_location('fast_malloc', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
    "module.restart_with_tuned_malloc()\n"
    "print(os.environ.get('GLIBC_TUNABLES', ''), os.getpid())\n"
)

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc tunables only")


def run_probe(tmp_path, **env):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    base = {
        k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "RELPERF_MALLOC_TUNING")
    }
    source = os.path.join(REPO, "relperf_cli.py")
    result = subprocess.run(
        [sys.executable, str(probe), source], capture_output=True, text=True, env={**base, **env}
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_restarts_with_the_tunables(tmp_path):
    assert run_probe(tmp_path)[0] == fast_malloc.TUNABLES


def test_respects_the_users_settings_and_the_opt_out(tmp_path):
    assert (
        run_probe(tmp_path, GLIBC_TUNABLES="glibc.malloc.arena_max=2")[0]
        == "glibc.malloc.arena_max=2"
    )
    assert (
        len(run_probe(tmp_path, RELPERF_MALLOC_TUNING="0")) == 1
    )  # no tunables printed, only the pid


def test_importing_the_library_has_no_side_effects():
    """No restart, no malloc settings, no warnings filter, no environment change (measured after
    Keras and TensorFlow themselves are imported)."""
    probe = (
        "import json, os, warnings\n"
        "import keras, tensorflow\n"
        "pid, environ, filters = os.getpid(), dict(os.environ), list(warnings.filters)\n"
        "import relperf_tf\n"
        "changed = sorted(k for k in set(environ) | set(os.environ)\n"
        "                 if environ.get(k) != os.environ.get(k))\n"
        "print(json.dumps([changed, warnings.filters == filters, os.getpid() == pid]))\n"
    )
    base = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=base, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    changed, same_filters, same_process = json.loads(result.stdout.splitlines()[-1])
    assert changed == [] and same_filters and same_process
