#!/usr/bin/env python
"""README's Results: shift-curve plot and tables from shift CSVs, beside the paper's rows.

python docs/results.py saved_models/*/shift.csv docs/comparison_shift.csv \
    --plot docs/shift_fashion_mnist.png

Each CSV is what scripts/shift_robustness.py writes; rows are grouped by their
`model` column (first CSV wins on duplicates). Prints one Markdown table of
accuracy per shift s = −8 … 8 (step 2) with the paper's rows (arXiv:2102.07680,
Fashion-MNIST, label 1 "Trouser") below, and draws every curve with the
paper's two as dashed lines.
"""

import argparse
import csv

# The paper's shift-robustness rows (Fashion-MNIST, Trouser), s = −8 … 8 step 2.
PAPER = {
    "Performer (paper)": [0.000, 0.000, 0.008, 0.509, 0.991, 0.984, 0.906, 0.021, 0.001],
    "RelativePerformer (paper)": [0.896, 0.948, 0.982, 0.990, 0.992, 0.989, 0.989, 0.987, 0.984],
    "ClippedRelativePerformer (paper)": [
        0.394,
        0.741,
        0.874,
        0.952,
        0.986,
        0.990,
        0.986,
        0.968,
        0.920,
    ],
}
SHIFTS = list(range(-8, 9, 2))


def read_curves(paths):
    curves = {}
    for path in paths:
        rows = list(csv.DictReader(open(path)))
        for model in dict.fromkeys(r["model"] for r in rows):
            if model not in curves:
                curves[model] = {
                    int(r["shift"]): float(r["accuracy_mean"]) for r in rows if r["model"] == model
                }
    return curves


def table(curves):
    lines = [
        "| s | " + " | ".join(f"{s:+d}" if s else "0" for s in SHIFTS) + " | worst / s = 0 |",
        "|---" * (len(SHIFTS) + 2) + "|",
    ]
    for name, curve in list(curves.items()) + [(k, dict(zip(SHIFTS, v))) for k, v in PAPER.items()]:
        worst = min(curve[s] for s in curve) / curve[0] if curve[0] else float("nan")
        lines.append(
            f"| {name} | " + " | ".join(f"{curve[s]:.3f}" for s in SHIFTS) + f" | {worst:.2f} |"
        )
    return "\n".join(lines)


def plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for name, curve in curves.items():
        shifts = sorted(curve)
        axis.plot(shifts, [curve[s] for s in shifts], marker="o", markersize=3, label=name)
    for name, values in PAPER.items():
        if name.startswith("Clipped"):
            continue
        axis.plot(
            SHIFTS,
            values,
            linestyle="--",
            color="grey" if name.startswith("Performer") else "black",
            label=name,
        )
    axis.set(
        xlabel="horizontal shift s (pixels, empty columns wrapped)",
        ylabel="test accuracy, label 1 'Trouser'",
        ylim=(-0.02, 1.02),
        title="Shift robustness, Fashion-MNIST (models trained alike on 2 CPU cores)",
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower center")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csvs", nargs="+")
    parser.add_argument("--plot")
    args = parser.parse_args()
    curves = read_curves(args.csvs)
    print(table(curves))
    if args.plot:
        plot(curves, args.plot)


if __name__ == "__main__":
    main()
