"""``scripts/test`` on a machine without the binaries the tests run: it asks apt-get for them.

The machine's PATH is copied into a directory of symlinks without ``redis-server``,
``prometheus``, ``promtool``, ``amtool``, ``prometheus-alertmanager`` and ``chromium``, and
``apt-get`` (and ``sudo``, ``id``) are replaced by scripts that log how they were called, so the
test installs nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HIDDEN = {
    "redis-server",
    "prometheus",
    "promtool",
    "amtool",
    "prometheus-alertmanager",
    "chromium",
    "chromium-browser",
    "apt-get",
    "sudo",
    "id",
}


def bare_path(tmp_path: Path, shims: dict[str, str]) -> str:
    """A PATH of one directory: every command of this machine's PATH but the hidden ones, and
    the given shell-script shims."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            target = bin_dir / name
            if name not in HIDDEN and not target.exists():
                target.symlink_to(Path(directory) / name)
    for name, body in shims.items():
        shim = bin_dir / name
        shim.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
        shim.chmod(0o755)
    return str(bin_dir)


def scripts_test(tmp_path: Path, uid: int, sudo: bool) -> tuple[int, str, list[str]]:
    log = tmp_path / "calls.log"
    shims = {
        # update succeeds; install fails, so the script stops before pip and pytest
        "apt-get": f'echo "apt-get $*" >> {log}; [ "$1" = update ]',
        "id": f"echo {uid}",
    }
    if sudo:
        shims["sudo"] = f'echo "sudo $1" >> {log}; exec "$@"'
    env = {
        "PATH": bare_path(tmp_path, shims),
        "HOME": str(tmp_path),
        "PYTHON": sys.executable,  # a virtualenv's: no python3-venv needed
    }
    run = subprocess.run(
        ["bash", str(REPO / "scripts" / "test")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    calls = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    return run.returncode, run.stderr, calls


def test_scripts_test_installs_every_missing_binary_with_apt_get(tmp_path: Path) -> None:
    code, stderr, calls = scripts_test(tmp_path, uid=0, sudo=False)
    assert code != 0  # the logging apt-get refused the install
    wanted = "redis-server prometheus prometheus-alertmanager chromium"
    assert f"scripts/test: installing {wanted}" in stderr
    assert calls == [
        "apt-get update -qq",
        f"apt-get install -y -qq --no-install-recommends {wanted}",
    ]


def test_scripts_test_uses_sudo_when_not_root_and_says_when_it_cannot(tmp_path: Path) -> None:
    code, _, calls = scripts_test(tmp_path / "sudo", uid=1000, sudo=True)
    assert code != 0
    assert [call.split()[:2] for call in calls] == [
        ["sudo", "apt-get"],
        ["apt-get", "update"],
        ["sudo", "apt-get"],
        ["apt-get", "install"],
    ]
    code, stderr, calls = scripts_test(tmp_path / "nosudo", uid=1000, sudo=False)
    assert code == 1 and calls == []
    assert "need root or sudo to apt-get install redis-server" in stderr
