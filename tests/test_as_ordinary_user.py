"""The sandbox and grading tests, run again as an ordinary user (a Codespace's `vscode`, a JupyterHub instructor).

When the suite runs as root (as in CI), this test adds a throwaway user and runs pytest on
the sandbox and grading modules as that user, with the same venv and the same checkout.
The user cannot enter /root (mode 0700), where pyenv's Python may live, so the run happens
in a private mount namespace in which such folders are covered by an empty tmpfs and only
the Python installation the venv runs on (pyvenv.cfg's `home`) is mounted back, read-only
(the checkout and venv too, should they lie below such a folder; tests/ordinary_user.py).
When the suite itself runs as an ordinary user, this test skips: that run already is the
non-root one.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ordinary_user import TOOLS, User, as_user, python_installation, throwaway_user, user_env

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
PATTERNS = ("test_grading_*.py", "test_sandbox*.py")
TIMEOUT = 1800  # seconds for the inner run; it takes about two and a half minutes here


def inner_modules() -> list[Path]:
    return sorted({path for pattern in PATTERNS for path in TESTS.glob(pattern)})


def unreadable_for_others(paths: list[Path]) -> list[str]:
    """Paths an ordinary user could not read (files) or list and enter (folders), with their modes."""
    bad = []
    for path in paths:
        mode = path.stat().st_mode
        need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
        if mode & need != need:
            bad.append(f"{path} ({stat.filemode(mode)})")
    return bad


@pytest.fixture
def user() -> Iterator[User]:
    if os.geteuid() != 0:
        pytest.skip(f"the suite runs as uid {os.getuid()}, not root: this run is itself the ordinary-user run")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not sys.platform.startswith("linux") or missing:
        pytest.skip(f"needs Linux and util-linux/passwd tools; missing: {', '.join(missing) or sys.platform}")
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        message = f"root, yet `unshare --mount` is refused here (a container without CAP_SYS_ADMIN?): {probe.stderr}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with throwaway_user() as made:
        yield made


def test_sandbox_and_grading_tests_pass_as_an_ordinary_user(user: User) -> None:
    modules = inner_modules()
    assert modules, f"no module matches {PATTERNS} in {TESTS}"
    python = Path(sys.executable)  # the venv's python (a symlink into the installation): the same venv, no reinstall
    bad = unreadable_for_others([REPO, TESTS, *modules, Path(sys.prefix), python.parent])
    assert not bad, ("the checkout and its venv must be readable by other users for the ordinary-user run (clone "
                     f"with umask 022); these are not: {', '.join(bad)}")
    needed = [python_installation(), Path(sys.prefix), REPO]  # folders above them that others cannot enter are covered
    command = [str(python), "-m", "pytest", "-p", "no:cacheprovider", f"--basetemp={user.basetemp}",
               "-q", "-ra", *(str(m.relative_to(REPO)) for m in modules)]
    env = {**user_env(user, [str(python.parent)]), "PYTHONDONTWRITEBYTECODE": "1"}
    started = time.monotonic()
    done = subprocess.run(as_user(user, needed, command), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)
    seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 0, (f"as ordinary user {user.name} (uid {user.uid}), `{' '.join(command)}` exited "
                                  f"with {done.returncode} after {seconds:.0f} s:\n{output}")
