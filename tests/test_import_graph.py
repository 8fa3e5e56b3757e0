"""The package's import graph: the library never imports the application, and nothing forms a
cycle (imports inside functions count: a lazy import must not hide one)."""

import ast
import os

from tests.conftest import REPO

PACKAGE = os.path.join(REPO, "relperf_tf")
APPLICATION = "relperf_tf.app"


def module_name(path):
    relative = os.path.relpath(path, REPO)[: -len(".py")].replace(os.sep, ".")
    return relative[: -len(".__init__")] if relative.endswith(".__init__") else relative


def package_modules():
    modules = {}
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                modules[module_name(path)] = path
    return modules


def imports_of(path, name, modules):
    """The package modules `path` imports (`from pkg import sub` counts as `pkg.sub`)."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def graph():
    modules = package_modules()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def is_application(name):
    return name == APPLICATION or name.startswith(APPLICATION + ".")


def test_the_library_never_imports_the_application():
    edges = graph()
    assert any(is_application(m) for m in edges) and any(not is_application(m) for m in edges)
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in edges.items()
        if not is_application(module)
        for target in targets
        if is_application(target)
    )
    assert not wrong, wrong


def find_cycle(edges):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state:
                cycle = visit(target, path + [target])
                if cycle:
                    return cycle
        state[module] = "done"
        return None

    for module in sorted(edges):
        if module not in state:
            cycle = visit(module, [module])
            if cycle:
                return cycle
    return None


def test_no_import_cycle():
    assert find_cycle(graph()) is None, " → ".join(find_cycle(graph()))


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_script_or_command_shadows_a_standard_module():
    """A script runs with its own folder first on sys.path: `scripts/inspect.py` would replace
    the standard library's `inspect` for every import TensorFlow makes."""
    import sys

    folders = [os.path.join(REPO, "scripts"), os.path.join(PACKAGE, "app", "commands")]
    names = {
        f[: -len(".py")] for folder in folders for f in os.listdir(folder) if f.endswith(".py")
    }
    assert not names & set(sys.stdlib_module_names), names & set(sys.stdlib_module_names)


# The library modules that may reach TensorFlow, inside a function run only on that backend:
# the Threefry dropout mask under XLA (Keras' own draw is slow there), and the check of a traced
# attention mask's form when the graph runs (keras.ops has no run-time assert).
TENSORFLOW_WORKAROUNDS = {"relperf_tf.layers.dropout", "relperf_tf.layers.attention_masks"}


def test_the_library_imports_no_tensorflow():
    """The library is Keras 3 (`keras.ops`, `keras.random`): only the application uses
    TensorFlow (tf.data, tf.distribute, SavedModel, the direct XLA steps), less the named
    backend workaround."""
    wrong = []
    for name, path in package_modules().items():
        if is_application(name) or name in TENSORFLOW_WORKAROUNDS:
            continue
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = [node.module or ""]
            else:
                continue
            wrong += [f"{name} imports {t}" for t in targets if t.split(".")[0] == "tensorflow"]
    assert not wrong, wrong


def test_importing_the_library_respects_the_users_backend():
    """`import relperf_tf` under KERAS_BACKEND=jax keeps JAX and loads no TensorFlow, nor does
    training through the library's dropout (its TensorFlow path is for that backend only)."""
    import subprocess
    import sys

    code = (
        "import sys, relperf_tf, keras; "
        "relperf_tf.layers.Dropout(0.5)(keras.ops.ones((2, 3)), training=True); "
        "print(keras.backend.backend(), 'tensorflow' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["jax", "False"], result.stdout
