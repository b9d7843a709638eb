"""Shared fixtures for tests/hwio."""
from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile

import pytest

XVFB_SCREEN = (640, 480)   # width, height of the virtual screen the window-SLM tests use


@pytest.fixture(scope="session")
def xvfb_display():
    """Start Xvfb on a free display for the session; yield its name (":N"), then stop it.

    Xvfb picks the display number itself (``-displayfd``), so parallel sessions do not
    collide.  ``DISPLAY`` points at it while the session runs.  Skips when Xvfb is missing.
    """
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    width, height = XVFB_SCREEN
    read_fd, write_fd = os.pipe()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([exe, "-displayfd", str(write_fd), "-screen", "0", f"{width}x{height}x24",
                             "-nolisten", "tcp", "-br", "-noreset"],
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=log)
    os.close(write_fd)
    number = b""
    try:
        while not number.endswith(b"\n"):
            ready, _, _ = select.select([read_fd], [], [], 10.0)
            chunk = os.read(read_fd, 16) if ready else b""
            if not chunk:
                break
            number += chunk
    finally:
        os.close(read_fd)
    if not number.strip().isdigit():
        proc.kill()
        proc.wait()
        log.seek(0)
        pytest.skip(f"Xvfb did not start: {log.read().decode(errors='replace').strip()[-300:]}")
    display = f":{number.strip().decode()}"
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display
    try:
        yield display
    finally:
        if old is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
