"""The package's build entry point, kept for `python setup.py …` habits; everything is
declared in pyproject.toml (PEP 621)."""

from setuptools import setup

setup()
