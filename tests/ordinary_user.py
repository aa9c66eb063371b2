"""Run a command as a throwaway ordinary user, from a test suite that runs as root.

`throwaway_user()` adds a user (useradd) whose home and pytest temp folder live in one
temp folder, and removes the user, its processes and that folder afterwards.
`as_user()` builds the command line that runs a command as that user in a private
mount namespace (unshare, mount and setpriv from util-linux): every folder the user
could not enter on the way to the paths the command needs (e.g. /root, mode 0700,
above pyenv's Python) is covered by an empty tmpfs, and just those paths are mounted
back, read-only. Nothing else on the machine changes.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from processes import wait_gone

TOOLS = ("useradd", "userdel", "unshare", "mount", "setpriv")
SHARED_TMP = ("/tmp", "/var/tmp", "/dev/shm")  # world-writable: what the user left there goes with it


@dataclass
class User:
    name: str
    uid: int
    gid: int
    home: Path
    top: Path  # the temp folder holding h/ (home), t/ (the user's) and s/ (stage); removed afterwards

    @property
    def tmp(self) -> Path:
        """A folder the user owns; short, as grading makes Unix sockets (at most 108 bytes) below temp folders."""
        return self.top / "t"

    @property
    def basetemp(self) -> Path:
        """For pytest's --basetemp: not there yet, in a folder the user owns (pytest deletes and remakes it)."""
        return self.tmp / "p"

    @property
    def stage(self) -> Path:
        """An empty root-only folder where as_user() parks mounts while it covers the folders above them."""
        return self.top / "s"


def python_installation(prefix: str = sys.prefix) -> Path:
    """The Python installation a venv runs on (its pyvenv.cfg `home`, minus bin/); the prefix itself otherwise."""
    cfg = Path(prefix) / "pyvenv.cfg"
    if not cfg.exists():
        return Path(os.path.realpath(prefix))
    settings = {key.strip(): value.strip() for key, _, value in
                (line.partition("=") for line in cfg.read_text().splitlines())}
    home = Path(os.path.realpath(settings["home"]))
    return home.parent if home.name == "bin" else home


def blocking_folders(path: Path) -> list[Path]:
    """The folders above `path` that others may not enter (no o+x), outermost first."""
    return [folder for folder in reversed(path.parents)
            if folder != Path("/") and not folder.stat().st_mode & stat.S_IXOTH]


def outermost(paths: list[Path]) -> list[Path]:
    kept: list[Path] = []
    for path in sorted(set(paths)):
        if not any(path.is_relative_to(k) for k in kept):
            kept.append(path)
    return kept


@contextmanager
def throwaway_user(prefix: str = "rwuser") -> Iterator[User]:
    """A fresh user with its own group; on exit its processes are killed, the user and its folders removed."""
    top = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir="/tmp"))
    top.chmod(0o711)  # the user may pass through to its home, but not list the folder
    name = f"{prefix}{secrets.token_hex(3)}"
    try:
        _passwd_tool(["useradd", "--create-home", "--home-dir", str(top / "h"), "--user-group",
                      "--shell", "/bin/sh", name])
        entry = pwd.getpwnam(name)
        user = User(name, entry.pw_uid, entry.pw_gid, top / "h", top)
        user.tmp.mkdir(mode=0o700)
        os.chown(user.tmp, user.uid, user.gid)
        user.stage.mkdir(mode=0o700)
        yield user
    finally:
        _remove(name, top)


def _remove(name: str, top: Path) -> None:
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:  # useradd failed
        shutil.rmtree(top, ignore_errors=True)
        return
    left = processes_of(uid)  # this user was made for this run: whatever it still runs is ours to stop
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_gone(set(left), timeout=10)
    for folder in SHARED_TMP:
        for entry in _owned_by(Path(folder), uid):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    _passwd_tool(["userdel", "--remove", name])
    shutil.rmtree(top, ignore_errors=True)


def _passwd_tool(command: list[str], attempts: int = 20) -> None:
    """useradd/userdel, retried while another process holds the password or group file lock (exit 1 or 10)."""
    for _ in range(attempts):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode not in (1, 10):
            break
        time.sleep(0.5)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` failed (exit {done.returncode}): {done.stderr.strip()}")


def _owned_by(folder: Path, uid: int) -> list[Path]:
    found = []
    for entry in folder.iterdir() if folder.is_dir() else []:
        try:
            if entry.lstat().st_uid == uid:
                found.append(entry)
        except FileNotFoundError:
            continue
    return found


def processes_of(uid: int) -> list[int]:
    """Processes whose real uid is `uid`."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            lines = status.read_text().splitlines()
        except OSError:
            continue
        real = next((line.split()[1] for line in lines if line.startswith("Uid:")), None)
        if real == str(uid):
            found.append(int(status.parent.name))
    return found


def as_user(user: User, needed: list[Path], command: list[str]) -> list[str]:
    """A root command line that runs `command` as `user`, with the `needed` paths reachable.

    Each needed path below a folder the user may not enter is bound to user.stage, the
    folder is covered by a tmpfs, and the path is moved back into place, read-only.
    """
    stage = user.stage
    needed = outermost([Path(os.path.realpath(p)) for p in needed])
    covers = outermost([folder for path in needed for folder in blocking_folders(path)])
    keep = [path for path in needed if any(path.is_relative_to(cover) for cover in covers)]
    q = shlex.quote
    lines = ["set -eu"]
    for i, path in enumerate(keep):
        lines.append(f"mkdir -p {q(str(stage / str(i)))} && mount --rbind {q(str(path))} {q(str(stage / str(i)))}")
    for cover in covers:
        lines.append(f"mount -t tmpfs -o size=1m,mode=0755 tmpfs {q(str(cover))}")
    for i, path in enumerate(keep):
        lines.append(f"mkdir -p {q(str(path))} && mount --move {q(str(stage / str(i)))} {q(str(path))}")
        lines.append(f"mount -o remount,bind,ro {q(str(path))}")
    lines.append(f"exec setpriv --reuid={user.uid} --regid={user.gid} --init-groups -- {shlex.join(command)}")
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", "\n".join(lines)]


def user_env(user: User, path: list[str], keep: tuple[str, ...] = ("LANG", "LC_ALL", "CI")) -> dict[str, str]:
    """A clean environment for the user: its own HOME, `path` before the system's PATH, TMPDIR unset (/tmp)."""
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env.update(HOME=str(user.home), USER=user.name, LOGNAME=user.name,
               PATH=os.pathsep.join([*path, "/usr/local/bin", "/usr/bin", "/bin"]))
    return env
