"""A TensorFlow profiler trace (XSpace `.xplane.pb`) summed per kernel and per kernel category.

Read by `benchmarks/profile_step.py`; no flags here, so tests import it freely.
"""

import collections
import re

# Kernel name (TF op type, or XLA thunk name without its number) → category; first match wins.
CATEGORIES = (
    ("GEMM", r"^(matmul|batchmatmul|dot|einsum|_mklmatmul|_fusedmatmul|ynn_fusion|xnn_fusion)"),
    ("reduction", r"(reduce|^sum$|^mean$|^max$|^min$|biasaddgrad|^prod$|argmax)"),
    ("copy/transpose", r"(transpose|^copy|reshape|concat|^slice|^pad|tile)"),
    ("optimizer", r"(resourceapply|assign|adam)"),
    (
        "element-wise",
        r"(fusion|mul|add|sub|exp|neg|square|sqrt|erf|tanh|select|div|cast|convert|gelu|"
        r"broadcast|relu|log|maximum|minimum|compare)",
    ),
)
# Events that only wrap others or wait: their own time is the runtime's, not a kernel's.
RUNTIME = re.compile(
    r"^(ThunkExecutor|ExecutorState|ThreadpoolListener|SlinkyThreadPool|end: |ParallelFor|"
    r"EagerExecute|EagerKernelExecute|EagerLocalExecute|TFE_|KernelAndDeviceFunc|"
    r"ExecuteAsyncOnStream|BlockUntilReady|step$|__inference|\s)"
)


def category(kernel):
    if kernel == "runtime":
        return "runtime (scheduling, waiting)"
    for name, pattern in CATEGORIES:
        if re.search(pattern, kernel.lower()):
            return name
    return "other"


def kernel_name(event_name):
    """'block_0/ff_hidden/MatMul:MatMul' → 'MatMul'; 'wrapped_reduce-window.87' →
    'wrapped_reduce-window'; wrappers and waits → 'runtime'."""
    if RUNTIME.match(event_name):
        return "runtime"
    name = event_name.rsplit(":", 1)[-1] if ":" in event_name else event_name
    return re.sub(r"([._]\d+)+$", "", name)


def _self_times(events, names):
    """(kernel, ms) per event of one thread: its own time, children excluded; a wrapper's child
    (e.g. a kernel's ParallelFor) counts for the kernel around it."""
    spans = sorted((e.offset_ps, e.offset_ps + e.duration_ps, names(e)) for e in events)
    stack, own = [], collections.Counter()  # stack: [end, kernel it counts for]
    for start, end, name in spans:
        while stack and stack[-1][0] <= start:
            stack.pop()
        owner = name if name != "runtime" or not stack else stack[-1][1]
        if stack:
            parent_kernel = stack[-1][1]
            own[parent_kernel] -= (min(end, stack[-1][0]) - start) / 1e9
        own[owner] += (end - start) / 1e9
        stack.append([end, owner])
    return own


def summarize(xplane_path, steps, wall_ms, cores):
    """Thread-milliseconds per step by category and by kernel over the CPU worker threads, and
    what the cores did not use (cores × wall time − the kernels' time)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xplane_path, "rb") as f:
        space.ParseFromString(f.read())
    plane = next(p for p in space.planes if p.name == "/host:CPU")
    by_kernel = collections.Counter()
    for line in plane.lines:
        if not line.name.startswith("tf_"):  # the Python thread only waits for the step
            continue
        own = _self_times(
            line.events, lambda e: kernel_name(plane.event_metadata[e.metadata_id].name)
        )
        for kernel, ms in own.items():
            by_kernel[kernel] += ms / steps
    runtime = by_kernel.pop("runtime", 0.0)
    busy = sum(by_kernel.values())
    by_category = collections.Counter()
    for kernel, ms in by_kernel.items():
        by_category[category(kernel)] += ms
    by_category["runtime (scheduling, waiting)"] += runtime
    by_category["idle cores"] = max(cores * wall_ms - busy - runtime, 0.0)
    return dict(
        cores=cores,
        kernel_ms_per_step=busy,
        categories=dict(by_category.most_common()),
        kernels=dict(by_kernel.most_common(25)),
    )
