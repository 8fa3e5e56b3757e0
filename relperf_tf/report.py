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


def render(results, path):
    folder = os.path.dirname(os.path.abspath(path))
    rows = [r for r in results.get("throughput", []) if "error" not in r]
    failed = [r for r in results.get("throughput", []) if "error" in r]
    lines = ["# Benchmarks", "", f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (TensorFlow on CPU). "
             "Rendered by `scripts/benchmark.py` from `docs/benchmarks.json`; each configuration ran in its own process: "
             "untimed warm-up, then the median of the timed windows. FLOP counts are analytic (multiply-adds × 2; training = 3 × forward).", ""]
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
    approximation = results.get("approximation", {})
    if approximation:
        lines += ["## FAVOR+ vs exact softmax attention", "", "Relative error ‖FAVOR+ − exact‖ / ‖exact‖ (1 025 tokens, 4 heads of 32; mean of 5 draws).", "", "| features | " + " | ".join(approximation) + " |", "|---|" + "---|" * len(approximation)]
        features = [r["nb_features"] for r in next(iter(approximation.values()))]
        for i, m in enumerate(features):
            lines.append(f"| {m} | " + " | ".join(f"{approximation[k][i]['relative_error']:.3f}" for k in approximation) + " |")
        _plot(os.path.join(folder, "approximation.png"), {k: ([r["nb_features"] for r in v], [r["relative_error"] for r in v]) for k, v in approximation.items()}, "random features m", "relative error", "FAVOR+ error vs features", logx=True, logy=True)
        lines += ["", "![approximation error](approximation.png)", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
