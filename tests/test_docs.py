"""The documentation: pages rendered from their records, every public name documented, the
README's size, and the package's metadata (commands, extras, version)."""

import ast
import importlib
import inspect
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

LIBRARY_MODULES = ("relperf_tf", "relperf_tf.layers", "relperf_tf.models", "relperf_tf.schedules")


def test_rendered_pages_are_what_their_records_give():
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "docs", "render.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def api_pages():
    folder = os.path.join(REPO, "docs", "api")
    return "\n".join(open(os.path.join(folder, name)).read() for name in os.listdir(folder))


def public_names(module_name):
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            n
            for n, v in vars(module).items()
            if not n.startswith("_")
            and getattr(v, "__module__", None) == module_name
            and (inspect.isclass(v) or inspect.isfunction(v))
        ]
    return module, names


@pytest.mark.parametrize("module_name", LIBRARY_MODULES)
def test_every_public_name_has_a_docstring_and_an_api_entry(module_name):
    """A name of `__all__` is a module, or has a docstring and a `:::` entry on an API page
    (constants: an attribute docstring, which griffe reads)."""
    module, names = public_names(module_name)
    pages = api_pages()
    missing = []
    for name in names:
        value = getattr(module, name)
        if inspect.ismodule(value):
            continue
        home = getattr(value, "__module__", None) or module_name
        documented = inspect.isclass(value) or inspect.isfunction(value)
        if documented and not inspect.getdoc(value):
            missing.append(f"{name}: no docstring")
        entries = (f"::: {module_name}.{name}", f"::: {home}.{name}")
        if module_name == "relperf_tf":  # the package's names are documented where they live
            entries += tuple(f"::: relperf_tf.models.{name}" for _ in (0,))
        if not any(entry in pages for entry in entries):
            missing.append(f"{name}: no `:::` entry in docs/api/")
    assert not missing, missing


def test_constants_have_attribute_docstrings():
    """griffe documents a module constant from the string right after it."""
    for path, names in (
        ("relperf_tf/models/model_factory.py", ("MODEL_NAMES", "POSITION_ENCODINGS")),
        ("relperf_tf/models/position_strategies.py", ("POSITION_STRATEGIES",)),
        ("relperf_tf/models/presets.py", ("PRESETS",)),
    ):
        body = ast.parse(open(os.path.join(REPO, path)).read()).body
        for i, node in enumerate(body[:-1]):
            targets = getattr(node, "targets", [])
            if any(getattr(t, "id", None) in names for t in targets):
                following = body[i + 1]
                assert isinstance(following, ast.Expr) and isinstance(
                    following.value, ast.Constant
                ), f"{path}: {targets[0].id} has no docstring"


def test_readme_is_short_and_links_pages_that_exist():
    text = open(os.path.join(REPO, "README.md")).read()
    assert len(text.splitlines()) <= 250
    for link in re.findall(r"\]\(((?:docs|examples)/[^)#]+)\)", text):
        assert os.path.exists(os.path.join(REPO, link)), link


def test_the_package_declares_the_commands_and_extras():
    import relperf_cli
    import relperf_tf

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the package supports 3.10
    project = tomllib.load(open(os.path.join(REPO, "pyproject.toml"), "rb"))["project"]
    scripts = project["scripts"]
    expected = {f"relperf-{c.replace('_', '-')}": f"relperf_cli:{c}" for c in relperf_cli.COMMANDS}
    assert scripts == expected
    assert sorted(project["optional-dependencies"]) == [
        "all",
        "app",
        "docs",
        "jax",
        "test",
        "torch",
    ]
    assert [d.split(">")[0] for d in project["dependencies"]] == ["keras", "numpy"]
    assert not any("==" in d for d in project["dependencies"])
    app = " ".join(project["optional-dependencies"]["app"])
    for module in ("tensorflow", "tensorflow-datasets", "keras-tuner", "absl-py", "matplotlib"):
        assert module in app
    assert relperf_tf.__version__.count(".") == 2


def python_blocks(path):
    text = open(os.path.join(REPO, path)).read()
    return re.findall(r"```python\n(.*?)```", text, re.S)


PAGES_WITH_CODE = ["README.md", "docs/index.md"] + [
    f"docs/guides/{name}" for name in sorted(os.listdir(os.path.join(REPO, "docs", "guides")))
]
BLOCKS = [(page, i) for page in PAGES_WITH_CODE for i in range(len(python_blocks(page)))]


@pytest.mark.parametrize("page, index", BLOCKS, ids=[f"{p}:{i}" for p, i in BLOCKS])
def test_python_blocks_of_the_readme_and_guides_run_as_written(page, index):
    code = python_blocks(page)[index]
    exec(compile(code, f"{page} python block {index}", "exec"), {"__name__": "docs"})
