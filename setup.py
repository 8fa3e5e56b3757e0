import ast
import re
from pathlib import Path

from setuptools import find_packages, setup

requirements = [
    line.split("#")[0].strip()
    for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip() and not line.startswith(("pytest", "ruff"))
]

# The commands of relperf_cli.py (read, not imported: setup.py runs before its dependencies exist).
COMMANDS = ast.literal_eval(
    re.search(
        r"^COMMANDS = (\(.*?\))$",
        Path(__file__).with_name("relperf_cli.py").read_text(),
        re.M | re.S,
    ).group(1)
)

setup(
    name="relperf_tf",
    version="0.2.0",
    description="Translation-equivariant Performers (arXiv:2102.07680) in Keras 3 / TensorFlow",
    packages=find_packages(include=["relperf_tf", "relperf_tf.*"]),
    python_requires=">=3.10",
    install_requires=requirements,
    extras_require={"test": ["pytest", "ruff"]},
    # The commands' entry points: process set-up before TensorFlow loads (relperf_cli.py).
    py_modules=["relperf_cli"],
    entry_points={
        "console_scripts": [
            f"relperf-{name.replace('_', '-')}=relperf_cli:{name}" for name in COMMANDS
        ]
    },
)
