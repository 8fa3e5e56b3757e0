"""Scripts restart once with glibc malloc settings, and respect the user's own."""

import os
import platform
import subprocess
import sys

import pytest

from tests.conftest import REPO

# A script file, as the restart re-runs sys.argv.
PROBE = "import sys; sys.path.insert(0, sys.argv[1]); import fast_malloc, os; print(os.environ.get('GLIBC_TUNABLES', ''), os.getpid())\n"

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc tunables only")


def run_probe(tmp_path, **env):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "RELPERF_MALLOC_TUNING")}
    result = subprocess.run([sys.executable, str(probe), os.path.join(REPO, "scripts")], capture_output=True, text=True, env={**base, **env})
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_restarts_with_the_tunables(tmp_path):
    # (Importing fast_malloc here would restart pytest itself.)
    source = open(os.path.join(REPO, "scripts", "fast_malloc.py")).read()
    tunables = source.split('TUNABLES = "')[1].split('"')[0]
    assert run_probe(tmp_path)[0] == tunables


def test_respects_the_users_settings_and_the_opt_out(tmp_path):
    assert run_probe(tmp_path, GLIBC_TUNABLES="glibc.malloc.arena_max=2")[0] == "glibc.malloc.arena_max=2"
    assert len(run_probe(tmp_path, RELPERF_MALLOC_TUNING="0")) == 1  # no tunables printed, only the pid
