"""`./workbook`: one install per set of extras, so `lab` and `test` in any order work offline once installed.

The script runs for real on a throwaway copy of the checkout whose .venv is a fresh venv that
sees this venv's packages through a .pth file (so pip finds every dependency installed and
downloads nothing), with the package index unreachable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {"PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "", "PIP_INDEX_URL": "http://127.0.0.1:9/",
           "PIP_NO_INDEX": "1"}


def reuse_this_venv(venv: Path) -> None:
    """A fresh venv (no pip of its own) that imports what this test's venv has installed."""
    base = sys._base_executable  # type: ignore[attr-defined]  # the Python this venv was made from
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()"
                                   "['purelib'])"], check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "this-venv.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")


def checkout_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "checkout"
    copy.mkdir(parents=True)
    for name in ("workbook", "pyproject.toml", "README.md", "setup.py", "MANIFEST.in"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, copy / name)
    (copy / "src").symlink_to(ROOT / "src")
    reuse_this_venv(copy / ".venv")
    # `./workbook test` installs Chromium, Docker and debootstrap with apt when missing; here they count as present.
    present = tmp_path / "present"
    present.mkdir()
    for tool in ("chromium", "dockerd", "debootstrap"):
        (present / tool).write_text("#!/bin/sh\nexit 0\n")
        (present / tool).chmod(0o755)
    return copy


def workbook(copy: Path, *args: str, build_isolation: bool = True) -> subprocess.CompletedProcess:
    """The script, offline. Without build isolation pip builds with this venv's setuptools, so an install works;
    with it (pip's default, what a learner gets) any install fails, as it needs setuptools from the index."""
    env = {**os.environ, **OFFLINE, "PATH": f"{copy.parent / 'present'}:{os.environ['PATH']}"}
    if not build_isolation:
        env["PIP_NO_BUILD_ISOLATION"] = "0"  # pip's spelling of "no build isolation"
    return subprocess.run(["./workbook", *args], cwd=copy, env=env, capture_output=True, text=True, timeout=300)


def installs(done: subprocess.CompletedProcess) -> bool:
    return "Installing redis-workbook" in done.stdout


def test_lab_after_test_and_the_reverse_never_reinstall_and_work_offline(tmp_path: Path) -> None:
    copy = checkout_copy(tmp_path)
    test = workbook(copy, "test", "--version", build_isolation=False)  # the one real install (~10 s)
    assert test.returncode == 0 and installs(test), test.stdout + test.stderr
    for args in (("lab", "--help"), ("setup",), ("test", "--version"), ("lab", "--help")):  # offline: no install
        done = workbook(copy, *args)
        assert done.returncode == 0 and not installs(done), f"./workbook {' '.join(args)}:\n{done.stdout}{done.stderr}"
    assert "usage: redis-workbook lab" in done.stdout

    with open(copy / "pyproject.toml", "a") as handle:
        handle.write("\n# changed\n")
    done = workbook(copy, "lab", "--help")
    assert installs(done) and done.returncode != 0, "a changed pyproject.toml reinstalls (offline: in vain)"
