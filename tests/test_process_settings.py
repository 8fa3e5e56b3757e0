"""Process settings: commands restart once with glibc malloc settings and respect the user's own;
importing the library changes nothing in the process (environment, malloc, warnings); the one
documented call, `relperf_cli.tune_process()`, raises the same thresholds in the running process
(mallopt) and turns TensorFlow's oneDNN kernels on when TensorFlow is not loaded yet."""

import json
import os
import platform
import subprocess
import sys

import pytest

import relperf_cli
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
    assert run_probe(tmp_path)[0] == relperf_cli.TUNABLES


def test_respects_the_users_settings_and_the_opt_out(tmp_path):
    assert (
        run_probe(tmp_path, GLIBC_TUNABLES="glibc.malloc.arena_max=2")[0]
        == "glibc.malloc.arena_max=2"
    )
    assert (
        len(run_probe(tmp_path, RELPERF_MALLOC_TUNING="0")) == 1
    )  # no tunables printed, only the pid


def test_importing_the_library_changes_nothing_in_the_process():
    """No restart, no warnings filter, no environment change, no malloc setting (measured after
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


# Where glibc puts a 32 MiB block: mallinfo2's `hblkhd` counts the bytes of blocks it mapped on
# their own (munmapped on free, so faulted in again on every reuse); heap blocks are not counted.
# (Counting page faults instead depends on the host: with transparent huge pages a mapped block
# faults 16 times, not 8 192.)
PLACEMENT_PROBE = (
    "import ctypes, sys, numpy\n"
    "import relperf_cli\n"
    "if sys.argv[1] == 'call':\n"
    "    relperf_cli.tune_process()\n"
    "import relperf_tf\n"
    "class Info(ctypes.Structure):\n"
    "    names = 'arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost'\n"
    "    _fields_ = [(n, ctypes.c_size_t) for n in names.split()]\n"
    "libc = ctypes.CDLL(None)\n"
    "libc.mallinfo2.restype = Info\n"
    "mapped = []\n"
    "for _ in range(3):\n"
    "    before = libc.mallinfo2().hblkhd\n"
    "    block = numpy.ones(8 << 20, numpy.float32)\n"
    "    mapped.append(libc.mallinfo2().hblkhd - before >= block.nbytes)\n"
    "    del block\n"
    "print(int(sum(mapped)))\n"
)


def test_the_documented_call_keeps_large_blocks_in_the_heap():
    """How many of three 32 MiB blocks glibc maps on their own: with `tune_process()` first, with
    it opted out (RELPERF_MALLOC_TUNING=0), and with the library imported alone (all started
    without GLIBC_TUNABLES, as a user's script is)."""
    import ctypes

    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("glibc before 2.33 has no mallinfo2")
    mapped = {}
    base = {
        k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "RELPERF_MALLOC_TUNING")
    }
    for case, env, argument in (
        ("call", base, "call"),
        ("opted out", dict(base, RELPERF_MALLOC_TUNING="0"), "call"),
        ("import only", base, "import"),
    ):
        result = subprocess.run(
            [sys.executable, "-c", PLACEMENT_PROBE, argument],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
        )
        assert result.returncode == 0, result.stderr
        mapped[case] = int(result.stdout.split()[-1])
    assert mapped == {"call": 0, "opted out": 3, "import only": 3}, mapped


def test_onednn_is_turned_on_only_when_unset_and_before_tensorflow():
    environ = {}
    assert relperf_cli.enable_onednn(environ, modules={}) and environ == {
        "TF_ENABLE_ONEDNN_OPTS": "1"
    }
    environ = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    assert not relperf_cli.enable_onednn(environ, modules={})
    assert environ == {"TF_ENABLE_ONEDNN_OPTS": "0"}
    environ = {}
    assert not relperf_cli.enable_onednn(environ, modules={"tensorflow": object()})
    assert environ == {}


ONEDNN_PROBE = (
    "import os, sys, relperf_cli\n"
    "if sys.argv[1] == 'call':\n"
    "    relperf_cli.tune_process()\n"
    "import relperf_tf\n"
    "from tensorflow.python.util import _pywrap_util_port\n"
    "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), _pywrap_util_port.IsMklEnabled())\n"
)


@pytest.mark.parametrize(
    "setting, argument, expected",
    [(None, "call", "1 True"), ("0", "call", "0 False"), (None, "import", "None")],
)
def test_the_documented_call_first_gives_tensorflow_onednn(setting, argument, expected):
    """TensorFlow reads the variable when it loads: the call sets it first, unless the user did;
    importing the library alone leaves it unset (TensorFlow then decides by the CPU)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    result = subprocess.run(
        [sys.executable, "-c", ONEDNN_PROBE, argument],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2].startswith(expected)


def test_a_command_without_the_application_names_the_extra(capsys):
    """relperf_cli exits with one line naming `relperf_tf[app]` when its modules are missing."""
    missing = {"tensorflow_datasets", "matplotlib"}
    with pytest.raises(SystemExit) as exit_code:
        relperf_cli.check_application(
            "sequence_shift", find_spec=lambda name: None if name in missing else object()
        )
    assert exit_code.value.code == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "relperf-sequence-shift" in message
    assert (
        "tensorflow_datasets, matplotlib" in message and "pip install 'relperf_tf[app]'" in message
    )
