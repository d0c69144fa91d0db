"""A real small file system for tests that need the kernel to say "no space left"."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def mount_tmpfs(mount_point: Path, size: str) -> str | None:
    """Mount a tmpfs of `size` (``1m``, ``12m``) at `mount_point`.

    Returns None when mounted, else why it could not be (not root, no mount(8), refused).
    """
    if shutil.which("mount") is None or os.geteuid() != 0:
        return "mounting a tmpfs needs root and mount(8)"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                           str(mount_point)], check=False, capture_output=True, timeout=10)
    if done.returncode != 0:
        return f"mounting a tmpfs is not permitted here: {done.stderr.decode().strip()}"
    return None


def unmount(mount_point: Path) -> None:
    """Unmount (lazily, so a process still holding a file does not block the test's end)."""
    subprocess.run(["umount", "-l", str(mount_point)], check=False, capture_output=True,
                   timeout=10)
