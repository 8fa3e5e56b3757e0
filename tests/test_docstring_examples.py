"""The `>>>` examples in the library's docstrings run, on every backend.

Shapes print as tuples, as they do on JAX; TensorFlow's `TensorShape([2, 5])` and PyTorch's
`torch.Size([2, 5])` are read as the tuple they hold, so one docstring serves the three."""

import doctest
import importlib
import pkgutil
import re

import keras
import numpy as np
import pytest

import relperf_tf

pytestmark = pytest.mark.all_backends

SHAPE = re.compile(r"(?:TensorShape|torch\.Size)\(\[([^\]]*)\]\)")


def as_tuple(match):
    items = [item.strip() for item in match.group(1).split(",") if item.strip()]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


class ShapesAsTuples(doctest.OutputChecker):
    def check_output(self, want, got, optionflags):
        return super().check_output(want, SHAPE.sub(as_tuple, got), optionflags)


def library_modules():
    names = [relperf_tf.__name__]
    for info in pkgutil.walk_packages(relperf_tf.__path__, relperf_tf.__name__ + "."):
        if not info.name.startswith("relperf_tf.app"):  # the application has no examples
            names.append(info.name)
    return names


def docstring_examples():
    finder = doctest.DocTestFinder(exclude_empty=True)
    cases = []
    for name in library_modules():
        for test in finder.find(importlib.import_module(name)):
            if test.examples:
                cases.append(pytest.param(test, id=test.name))
    return cases


def test_the_library_has_docstring_examples():
    assert len(docstring_examples()) >= 15


@pytest.mark.parametrize("test", docstring_examples())
def test_docstring_example(test):
    runner = doctest.DocTestRunner(checker=ShapesAsTuples(), optionflags=doctest.ELLIPSIS)
    # Each example sees its module's names and the usual imports (keras, ops, np), as in Keras.
    test.globs = {"keras": keras, "ops": keras.ops, "np": np, **test.globs}
    failures = []
    result = runner.run(test, out=failures.append)
    assert result.failed == 0, "".join(failures)
