"""`evaluate.py`: test metrics of finished runs appended to one CSV."""

import csv
import json
import os

import pytest

from tests.conftest import run_script


def test_evaluate_csv_appends_without_duplicates(tmp_path, tiny_run):
    run_dir, log_dir = tiny_run
    output = str(tmp_path / "results.csv")
    for _ in range(2):
        result = run_script("evaluate.py", [log_dir, f"--output={output}"])
        assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(open(output)))
    assert len(rows) == 1
    row = rows[0]
    assert row["run_dir"] == run_dir and row["model"] == "RelativePerformer" and row["dim"] == "8"
    recorded = json.load(open(os.path.join(run_dir, "test_metrics.json")))
    assert float(row["test_accuracy"]) == pytest.approx(recorded["test_accuracy"], abs=1e-6)
    assert int(row["parameters"]) > 0 and float(row["test_loss"]) > 0
