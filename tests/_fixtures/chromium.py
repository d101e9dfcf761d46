"""Debian's headless ``chromium``: load a local page, read its console, DOM and a screenshot."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@dataclass
class Rendered:
    dom: str
    console: list[str]
    """Every console message the page logged (``CONSOLE`` lines of chromium's log)."""
    screenshot: Path


def _run(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--window-size=1200,1400",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )


def render(page: Path, screenshot: Path) -> Rendered:
    """Load ``page`` (a file, no network) twice: once for the DOM, once for a PNG."""
    profile = screenshot.parent / "chromium-profile"
    url = page.resolve().as_uri()
    dumped = _run(["--dump-dom", url], profile)
    shot = _run([f"--screenshot={screenshot}", url], profile)
    console = [
        line
        for out in (dumped.stderr, shot.stderr)
        for line in out.splitlines()
        if ":CONSOLE" in line
    ]
    return Rendered(dumped.stdout, console, screenshot)
