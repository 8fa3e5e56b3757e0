"""Commands restart once with glibc malloc settings, and respect the user's own."""

import os
import platform
import subprocess
import sys

import pytest

from relperf_tf import fast_malloc
from tests.conftest import REPO

# Loads fast_malloc.py alone (no package, no TensorFlow) and restarts: a script
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
    source = os.path.join(REPO, "relperf_tf", "fast_malloc.py")
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


def test_only_the_projects_commands_restart():
    scripts = os.path.join(REPO, "scripts")
    assert fast_malloc.is_command([os.path.join(scripts, "train.py")])
    assert fast_malloc.is_command(["/usr/local/bin/relperf-train"])
    assert fast_malloc.is_command([os.path.join(REPO, "relperf_tf", "commands", "tune.py")])
    assert not fast_malloc.is_command(["/home/user/train.py"])
    assert not fast_malloc.is_command([sys.argv[0]])  # pytest
    assert not fast_malloc.is_command([""])  # python -c / the REPL
