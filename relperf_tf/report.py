"""Renders benchmark results (JSON) as docs/benchmarks.md with PNG plots."""

import os
import platform


def _plot(path, series, xlabel, ylabel, title, logx=False, logy=False):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4), dpi=110)
    for label, (xs, ys) in series.items():
        axis.plot(xs, ys, marker="o", label=label)
    axis.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        axis.set_xscale("log", base=2)
    if logy:
        axis.set_yscale("log")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _find(rows, model, mode, tokens=1025):
    found = [r for r in rows if r["model"] == model and r["mode"] == mode and r["tokens"] == tokens and not r["jit_compile"]]
    return found[0] if found else None


def _targets(rows):
    """The targets of the speed issue, each met or not, from the measured rows."""
    lines = ["## Targets (reference config, this CPU)", "", "| target | measured | met |", "|---|---|---|"]

    def add(text, value, ok):
        lines.append(f"| {text} | {value} | {'yes' if ok else 'no'} |")

    train, infer = _find(rows, "Performer", "train"), _find(rows, "Performer", "infer")
    if train:
        add("Performer training ≥ 27 img/s (stretch ≥ 38)", f"{train['images_per_s']:.1f} img/s", train["images_per_s"] >= 27)
    if infer:
        add("Performer inference ≥ 105 img/s", f"{infer['images_per_s']:.1f} img/s", infer["images_per_s"] >= 105)
    for model, ratio in (("RelativePerformer", 0.8), ("ClippedRelativePerformer", 0.5)):
        row = _find(rows, model, "train")
        if train and row:
            measured = row["images_per_s"] / train["images_per_s"]
            add(f"{model} training ≥ {ratio}× Performer", f"{measured:.2f}×", measured >= ratio)
    big, small = _find(rows, "Performer", "train", 16385), _find(rows, "Performer", "train", 4097)
    if big:
        add("128×128 (16 385 tokens) training at batch 4 in < 4 GB peak RSS", f"{big['peak_rss_gb']:.2f} GB", big["peak_rss_gb"] < 4)
        if small and small["batch_size"] == big["batch_size"]:
            growth = big["ms_per_step"] / small["ms_per_step"]
            add("step time ≤ 4.5× per 4× tokens (4 097 → 16 385)", f"{growth:.2f}×", growth <= 4.5)
    return lines + [""]


def render(results, path):
    folder = os.path.dirname(os.path.abspath(path))
    rows = [r for r in results.get("throughput", []) if "error" not in r]
    failed = [r for r in results.get("throughput", []) if "error" in r]
    lines = ["# Benchmarks", "", f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (TensorFlow on CPU). "
             "Rendered by `scripts/benchmark.py` from `docs/benchmarks.json`; each configuration ran in its own process: "
             "untimed warm-up, then the median of the timed windows. FLOP counts are analytic (multiply-adds × 2; training = 3 × forward). "
             "A training window is one `model.fit` call of 3 steps, so per-call overhead is included.", ""]
    lines += ["## Throughput and memory", "", "| model | mode | image | tokens | batch | XLA | ms/step | images/s | GFLOP/s | % of matmul peak | peak RSS (GB) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["mode"], r["image_size"], r["model"])):
        lines.append(f"| {r['model']} | {r['mode']} | {r['image_size']}² | {r['tokens']} | {r['batch_size']} | {'yes' if r['jit_compile'] else 'no'} | {r['ms_per_step']:.0f} | {r['images_per_s']:.1f} | {r['gflops_per_s']:.1f} | {100 * r['fraction_of_peak']:.1f} | {r['peak_rss_gb']:.2f} |")
    for r in failed:
        lines.append(f"| {r.get('model_name', r.get('model'))} | {r['mode']} | {r['image_size']}² | | {r['batch_size']} | | failed: {r['error']} | | | | |")
    lines.append("")
    for mode in ("train", "infer"):
        series, memory = {}, {}
        for r in rows:
            if r["mode"] == mode:
                series.setdefault(r["model"], {})[r["tokens"]] = r["images_per_s"]
                memory.setdefault(r["model"], {})[r["tokens"]] = r["peak_rss_gb"]
        if any(len(v) > 1 for v in series.values()):
            name = f"throughput_{mode}.png"
            _plot(os.path.join(folder, name), {k: (sorted(v), [v[t] for t in sorted(v)]) for k, v in series.items()}, "tokens", "images/s", f"{mode} throughput vs tokens", logx=True, logy=True)
            lines += [f"![{mode} throughput]({name})", ""]
            name = f"memory_{mode}.png"
            _plot(os.path.join(folder, name), {k: (sorted(v), [v[t] for t in sorted(v)]) for k, v in memory.items()}, "tokens", "peak RSS (GB)", f"{mode} memory vs tokens (linear vs quadratic)", logx=True, logy=True)
            lines += [f"![{mode} memory]({name})", ""]
    lines += _targets(rows)
    approximation = results.get("approximation", {})
    if approximation:
        lines += ["## FAVOR+ vs exact softmax attention", "", "Relative error ‖FAVOR+ − exact‖ / ‖exact‖ (1 025 tokens, 4 heads of 32; mean of 5 draws).", "", "| features | " + " | ".join(approximation) + " |", "|---|" + "---|" * len(approximation)]
        features = [r["nb_features"] for r in next(iter(approximation.values()))]
        for i, m in enumerate(features):
            lines.append(f"| {m} | " + " | ".join(f"{approximation[k][i]['relative_error']:.3f}" for k in approximation) + " |")
        _plot(os.path.join(folder, "approximation.png"), {k: ([r["nb_features"] for r in v], [r["relative_error"] for r in v]) for k, v in approximation.items()}, "random features m", "relative error", "FAVOR+ error vs features", logx=True, logy=True)
        lines += ["", "![approximation error](approximation.png)", ""]
    notes = results.get("notes", [])
    if notes:
        lines += ["## Notes on these measurements", ""] + [f"- {note}" for note in notes] + [""]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
