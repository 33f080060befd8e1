"""Open a report in real headless Chromium: console messages, rendered DOM, optional screenshot.

Used by the tests and by `python -m reports check`. Chromium logs every page
console message (uncaught errors, failed resource loads, console.*) to stderr as
`...:CONSOLE:N] "message", source: URL (line)`; a clean report has none.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import List, Optional

# Offline and quiet: without these Chromium keeps trying Google's services on a closed network.
_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-default-apps", "--enable-logging=stderr", "--v=0"]
_CONSOLE = re.compile(r":CONSOLE(?::|\()\d+\)?\] (.*)")


@dataclass
class BrowserResult:
    dom: str
    console: List[str] = field(default_factory=list)
    screenshot: str = ""


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError("Chromium is not installed: `apt-get install chromium` (make test installs it)")


def open_in_chromium(path: str, screenshot: Optional[str] = None, width: int = 1280, height: int = 2000,
                     timeout: float = 90) -> BrowserResult:
    """Load a local HTML file, run its scripts, return the DOM and every console message."""
    url = "file://" + os.path.abspath(path)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        base = [chromium_binary(), *_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]
        done = subprocess.run(base + ["--dump-dom", url], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"chromium exited {done.returncode} on {path}: {done.stderr[-2000:]}")
        console = [m.group(1) for m in map(_CONSOLE.search, done.stderr.splitlines()) if m]
        if screenshot:
            shot = subprocess.run(base + ["--hide-scrollbars", f"--screenshot={os.path.abspath(screenshot)}", url],
                                  capture_output=True, text=True, timeout=timeout)
            if shot.returncode != 0 or not os.path.exists(screenshot):
                raise RuntimeError(f"chromium could not take a screenshot of {path}: {shot.stderr[-2000:]}")
    return BrowserResult(done.stdout, console, screenshot or "")
