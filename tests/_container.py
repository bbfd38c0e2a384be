"""The container engine the image tests run (tests/test_container.py, tests/test_container_job.py): podman with
runc where it is there, and a local Debian bookworm base made by mmdebstrap (no registry is reachable from CI)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

__all__ = ["BASE", "CACHE", "base_image", "find_engine", "run_args", "sh"]

BASE = "localhost/runai-base:bookworm"
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "runai-reporter")


def find_engine() -> list[str]:
    """The engine's command line (podman with runc where it is there, as build.sh runs it), or a skip."""
    for name in ("podman", "docker"):
        path = shutil.which(name)
        if path:
            runtime = ["--runtime", "runc"] if name == "podman" and shutil.which("runc") else []
            return [path, *runtime]
    pytest.skip("no container engine: apt-get install podman runc mmdebstrap (scripts/test.sh installs them)")


def run_args(engine: list[str]) -> list[str]:
    # podman's default open-file limit is more than this kind of host lets a container have (build.sh's note).
    return ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"] if "podman" in engine[0] else []


def sh(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env)
    assert done.returncode == 0, f"{' '.join(args[:4])}... exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def base_image(engine: list[str]) -> str:
    """A local bookworm image with python3 and venv: imported from a cached mmdebstrap tarball, made if need be."""
    if subprocess.run([*engine, "image", "inspect", BASE], capture_output=True).returncode == 0:
        return BASE
    tarball = os.path.join(CACHE, "rootfs-bookworm.tar")
    if not os.path.exists(tarball):
        if not shutil.which("mmdebstrap"):
            pytest.fail("mmdebstrap is not installed: apt-get install mmdebstrap (scripts/test.sh installs it)")
        os.makedirs(CACHE, exist_ok=True)
        sh(
            "mmdebstrap",
            "--quiet",
            "--format=tar",
            "--variant=minbase",
            "--include=python3,python3-venv",
            "bookworm",
            tarball + ".part",
        )
        os.replace(tarball + ".part", tarball)
    sh(*engine, "import", tarball, BASE)
    return BASE
