"""Installing a Debian package a test needs (Docker's engine, Chromium) on a fresh machine."""

from __future__ import annotations

import os
import shutil
import subprocess


def install_debian_package(program: str, package: str) -> str | None:
    """Install ``package`` with apt-get when ``program`` is missing; returns why it cannot
    be, or None once ``program`` is there."""
    if shutil.which(program):
        return None
    if shutil.which("apt-get") is None:
        return f"{program} is not installed and there is no apt-get to install {package}"
    if os.geteuid() != 0:
        return f"{program} is not installed, and installing {package} needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
    ):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            return f"{' '.join(argv)} failed: {lines[-1] if lines else 'no output'}"
    return None if shutil.which(program) else f"{package} is installed but has no {program}"
