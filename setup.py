"""Packaging for runai (the reporter library) and uploader (its background process)."""

from __future__ import annotations

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version() -> str:
    # Read, never import: importing the package at build time would need its
    # dependencies installed before they are.
    with open(os.path.join(HERE, "runai", "reporter", "_version.py"), encoding="utf-8") as f:
        match = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M)
    if not match:
        raise RuntimeError("no __version__ in runai/reporter/_version.py")
    return match.group(1)


with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="runai",
    version=read_version(),
    description="Report training metrics and parameters to a Prometheus Pushgateway, crash-safe",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # Every subpackage of both (uploader/ is packages by concept: docs/architecture.md).
    packages=find_packages(include=["runai", "runai.*", "uploader", "uploader.*"]),
    package_data={"runai.reporter": ["py.typed"], "uploader": ["py.typed"]},
    # 0.25.0 is the first prometheus_client that sends a grouping-key value with a
    # space base64-encoded; older ones send it as '+', which the gateway keeps
    # (a podUUID "a b" would land in group "a+b"). tests/test_local_attacks.py pins it.
    # cramjam: snappy's block format for remote write (uploader/sinks/remote_write/); the uploader's alone,
    # the training process never imports it.
    install_requires=["prometheus_client>=0.25", "watchdog>=4", "cramjam>=2.8"],
    extras_require={
        "keras": ["keras>=3"],
        # lightning also installs pytorch_lightning; runai.reporter.lightning works with either alone.
        "lightning": ["lightning>=2"],
        # accelerate: the Trainer needs it to train on torch.
        "transformers": ["transformers>=4.40", "accelerate"],
        # ruff and mypy pinned: CI fails on their findings, and a newer release may add some.
        "test": [
            "pytest>=7",
            "numpy",
            "hypothesis",
            "cryptography",
            "bcrypt",
            "matplotlib",
            "markdown-it-py",
            # protobuf: the official runtime decodes the hand-encoded remote-write requests in a test.
            "protobuf>=4.25",
            "ruff==0.17.6",
            "mypy==2.4.1",
            # validates deploy/kubernetes/ offline against the Kubernetes schemas it bundles (tests/test_deploy.py)
            "kubernetes-validate==1.37.0",
            "PyYAML",
            # the layers contract of .importlinter: imports run down, never sideways (docs/architecture.md)
            "import-linter==2.17",
            # builds docs/grafana/runai-reporter-dashboard.json (docs/grafana/dashboard.py); needs 3.11
            "grafana-foundation-sdk==1769699998!10.1.0; python_version >= '3.11'",
        ],
        "plot": ["matplotlib"],
        "bench": ["matplotlib"],
    },
    entry_points={"console_scripts": ["runai-uploader=uploader.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: System :: Monitoring",
    ],
)
