"""Training runs as a results record: one row per run directory (its hparams.json and
test_metrics.json), rendered by `docs/render.py` as a table on docs/results.md.

    python benchmarks/runs_record.py RUN_DIR... --name=exact_factor_features \
        --title="…" --description="…" --columns=nb_features:m,test_accuracy:test:4 \
        --command="scripts/train.py …" [--commit=3df326b]

A column is `key:label[:digits]`, `key` a name of hparams.json or test_metrics.json.
`--command` is how the runs were trained (their flags); `--commit` the code they ran, when
not the checkout's (e.g. a snapshot kept for a long run). The record goes to
docs/records/<name>.json.
"""

import argparse
import datetime
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import records  # noqa: E402


def parse_columns(text):
    columns = []
    for item in text.split(","):
        parts = item.split(":")
        if len(parts) not in (2, 3) or not all(parts[:2]):
            raise ValueError(f"--columns item {item!r} is not allowed; use key:label[:digits].")
        column = dict(key=parts[0], label=parts[1])
        if len(parts) == 3:
            column["digits"] = int(parts[2])
        columns.append(column)
    return columns


def run_row(run_dir, columns):
    values = {}
    for name in ("hparams.json", "test_metrics.json"):
        path = os.path.join(run_dir, name)
        if not os.path.exists(path):
            raise ValueError(f"{run_dir} has no {name}: not a finished run.")
        values.update(json.load(open(path)))
    missing = [c["key"] for c in columns if c["key"] not in values]
    if missing:
        raise ValueError(f"{run_dir} has no {', '.join(missing)}; choose other --columns.")
    row = {"run": os.path.basename(os.path.normpath(run_dir))}
    row.update({c["key"]: values[c["key"]] for c in columns})
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--name", required=True, help="the record: docs/records/<name>.json")
    parser.add_argument("--title", required=True)
    parser.add_argument("--description", required=True)
    parser.add_argument("--columns", required=True, help="key:label[:digits],…")
    parser.add_argument("--command", required=True, help="how the runs were trained")
    parser.add_argument("--commit", default=None, help="the code the runs ran")
    parser.add_argument("--output", default=None, help="default: docs/records/<name>.json")
    args = parser.parse_args(argv)
    try:
        columns = parse_columns(args.columns)
        rows = [run_row(d, columns) for d in args.run_dirs]
    except ValueError as error:
        parser.error(str(error))
    sitting = records.provenance()
    sitting["command"] = args.command
    if args.commit:
        sitting["commit"] = args.commit
    dates = sorted(os.path.getmtime(os.path.join(d, "test_metrics.json")) for d in args.run_dirs)
    sitting["date"] = datetime.datetime.fromtimestamp(dates[-1], datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC"
    )
    record = dict(
        name=args.name,
        title=args.title,
        description=args.description,
        columns=[dict(key="run", label="run")] + columns,
        sittings=[dict(sitting, recorded_by=records.provenance()["command"])],
        rows=rows,
    )
    path = args.output or os.path.join(records.REPO, "docs", "records", f"{args.name}.json")
    records.write(path, record)
    print(f"recorded {path}; render it with python docs/render.py")


if __name__ == "__main__":
    main()
