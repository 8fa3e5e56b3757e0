"""Run directories: `<log_dir>/<exp_name>/<version>/`, planned, claimed and recorded."""

import dataclasses
import os
import re

import keras
import tensorflow as tf


def next_version(exp_dir):
    taken = [
        int(m.group(1))
        for name in (os.listdir(exp_dir) if os.path.isdir(exp_dir) else [])
        if (m := re.fullmatch(r"version_(\d+)", name))
    ]
    return f"version_{max(taken, default=-1) + 1}"


def _writable(path):
    """Whether `path` could be created: its nearest existing ancestor is a writable dir."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def plan_run_dir(config):
    """The run directory to use, checked but not created."""
    exp_dir = os.path.join(config.log_dir, config.exp_name)
    if not _writable(config.log_dir) or (os.path.exists(exp_dir) and not _writable(exp_dir)):
        raise ValueError(
            f"flag --log_dir={config.log_dir!r} is not writable; use a directory you can write to."
        )
    version = config.version or next_version(exp_dir)
    run_dir = os.path.join(exp_dir, version)
    if os.path.exists(run_dir):
        if not config.resume:
            raise ValueError(
                f"flag --version={version!r} exists in {exp_dir}; pass --resume to continue it or "
                "choose another version."
            )
        if os.path.exists(os.path.join(run_dir, "test_metrics.json")):
            raise ValueError(
                f"flag --version={version!r} is already finished (test_metrics.json exists); "
                "choose another version."
            )
    return run_dir


def claim_run_dir(config):
    """Creates the run directory and returns it; safe against concurrent runs.

    `os.mkdir` is atomic: of two runs that planned the same automatic
    `version_N`, one creates it and the other takes the next free number. An
    explicit `--version` that appeared meanwhile is an error, as in
    `plan_run_dir`; with `--resume` the existing directory is reused.
    """
    exp_dir = os.path.join(config.log_dir, config.exp_name)
    os.makedirs(exp_dir, exist_ok=True)
    while True:
        run_dir = os.path.join(exp_dir, config.version or next_version(exp_dir))
        try:
            os.mkdir(run_dir)
            return run_dir
        except FileExistsError:
            if config.version is None:
                continue  # another run took this number first
            if config.resume:
                return run_dir
            raise ValueError(
                f"flag --version={config.version!r} exists in {exp_dir}; pass --resume to "
                "continue it or choose another version."
            ) from None


def run_record(config, run_dir, strategy, model, **extra):
    """What `hparams.json` holds: every setting, where the run lives, and what was built."""
    return dict(
        dataclasses.asdict(config),
        run_dir=run_dir,
        replicas=strategy.num_replicas_in_sync,
        **extra,
        parameters=model.count_params(),
        dtype_policy=model.dtype_policy.name,
        versions=_versions(),
    )


def _versions():
    return {"tensorflow": tf.__version__, "keras": keras.__version__}
