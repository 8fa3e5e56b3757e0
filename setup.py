from pathlib import Path

from setuptools import find_packages, setup

requirements = [
    line.split("#")[0].strip()
    for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip() and not line.startswith(("pytest", "ruff"))
]

setup(
    name="relperf_tf",
    version="0.1.0",
    description="Translation-equivariant Performers (arXiv:2102.07680) in Keras 3 / TensorFlow",
    packages=find_packages(include=["relperf_tf", "relperf_tf.*"]),
    python_requires=">=3.10",
    install_requires=requirements,
    extras_require={"test": ["pytest", "ruff"]},
    entry_points={
        "console_scripts": [
            f"relperf-{name}=relperf_tf.commands.{name}:run"
            for name in (
                "train",
                "evaluate",
                "shift",
                "export",
                "predict",
                "tune",
                "benchmark",
            )
        ]
        + ["relperf-sequence-shift=relperf_tf.commands.sequence_shift:run"]
    },
)
