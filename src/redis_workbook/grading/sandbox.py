"""The worker's sandbox, entered before any learner code runs.

Always: resource limits (address space, CPU seconds, file size, processes, no core
files) and a fresh working folder holding only a copy of the notebook.

When the grader runs as root on Linux, also:

- new mount and PID namespaces: the worker becomes process 1 of its own PID
  namespace, so when it dies the kernel kills every process the learner started,
  and a fresh /proc shows only those (not the grader's command lines, not the
  Redis password);
- private, size-capped tmpfs on /tmp, /var/tmp and /dev/shm;
- the grader's secrets (grader/, solutions/, .git/, private tests, the class's
  submissions and results) covered by empty read-only tmpfs mounts; folders the
  unprivileged user could not enter anyway (e.g. /root) are covered too, and
  the Python installation is mounted back inside them (open_tree/move_mount);
- an unprivileged user: uid UID_BASE + the worker's pid (a uid of its own, so
  RLIMIT_NPROC, which counts per uid, bounds this worker alone and no two
  learners can signal each other), group nogroup, no supplementary groups,
  no_new_privs.

Where the kernel refuses (no root, no namespaces) the sandbox keeps what it can
and says what it could not do in `warnings`.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import stat
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

UID_BASE = 2_000_000_000
NOGROUP = 65534
CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
SYS_OPEN_TREE, SYS_MOVE_MOUNT = 428, 429  # same number on every architecture (added in Linux 5.2)
OPEN_TREE_CLONE, AT_RECURSIVE, AT_FDCWD, MOVE_MOUNT_F_EMPTY_PATH = 1, 0x8000, -100, 4
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
PRIVATE_TMP = ("/tmp", "/var/tmp", "/dev/shm")
NEVER_HIDDEN = ("/", "/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/dev", "/proc", "/sys", "/var", "/run")


@dataclass
class Limits:
    """What one notebook process may use. Memory is address space, so it bounds a memory bomb early."""

    memory_mb: int = 2048
    cpu_seconds: int = 3600
    file_mb: int = 64
    processes: int = 128
    tmp_mb: int = 256


@dataclass
class Report:
    """What the sandbox did, for the grader's log and the learner's feedback."""

    workdir: str = ""
    cleanup: str = ""  # a folder the grader removes after the worker is gone ("" when it lives in a tmpfs)
    isolation: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: None if s is None else s.encode())  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to kill this process when its parent dies (reset by fork and by a uid change)."""
    if sys.platform.startswith("linux"):
        _libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def enter(settings: dict, notebook_name: str, notebook_text: str) -> Report:
    """Confine this process; returns what was done. May fork: the caller continues in the child."""
    limits = Limits(**settings.get("limits", {}))
    hide = [p for p in (os.path.realpath(p) for p in settings.get("hide", [])) if p not in NEVER_HIDDEN]
    report = Report()
    uid = None
    private_tmp = False
    if sys.platform.startswith("linux") and os.geteuid() == 0:
        uid = UID_BASE + os.getpid()
        try:
            _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWPID), "unshare")
        except OSError as exc:
            report.warnings.append(f"the kernel refused new mount/PID namespaces ({exc}): learner code can see "
                                   "the machine's processes and every file its user may read")
        else:
            _become_namespace_init()
            private_tmp = _private_filesystem(hide, limits, report)
    elif hide:
        report.warnings.append(f"not running as root: learner code runs as uid {os.getuid()} and can read every "
                               "file that user can read, including the grader's tests; grade as root (e.g. in a "
                               "container) for the full sandbox")
    _make_workdir(report, private_tmp, uid, notebook_name, notebook_text)
    _set_limits(limits, fresh_uid=uid is not None, report=report)
    if uid is not None:
        _drop_privileges(uid, report)
    os.chdir(report.workdir)
    return report


def _become_namespace_init() -> None:
    """Fork: the child is process 1 of the new PID namespace; this process waits and mirrors how it ended."""
    pid = os.fork()
    if pid == 0:
        return
    os.closerange(3, 1 << 16)  # keep no copy of the grader's pipes: their EOF must say "the worker is gone"
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.kill(os.getpid(), sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def needed_paths() -> list[str]:
    """The folders Python needs after the privilege drop: the installation, the venv, sys.path."""
    found = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable)), *[p for p in sys.path if p and os.path.isdir(p)]}
    return _outermost(os.path.realpath(p) for p in found)


def _outermost(paths: object) -> list[str]:
    kept: list[str] = []
    for path in sorted(set(paths)):  # type: ignore[call-overload]
        if not any(_inside(path, k) for k in kept):
            kept.append(path)
    return kept


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _blocking_ancestor(path: str) -> str | None:
    """The first folder above `path` that others may not enter (e.g. /root, mode 0700)."""
    parts = Path(path).parts
    for depth in range(1, len(parts)):
        folder = str(Path(*parts[:depth]))
        if not os.stat(folder).st_mode & stat.S_IXOTH:
            return folder
    return None


def _private_filesystem(hide: list[str], limits: Limits, report: Report) -> bool:
    """Mounts of this namespace: tmpfs on the temp folders and over secrets, Python mounted back, /proc."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    needed = needed_paths()
    covers = {p: f"size={limits.tmp_mb}m,mode=1777" for p in PRIVATE_TMP if os.path.isdir(p)}
    for path in needed:
        if (blocker := _blocking_ancestor(path)) is not None:
            covers.setdefault(blocker, "size=1m,mode=0755")
    for path in hide:
        if any(_inside(n, path) for n in needed) and os.path.isdir(path):
            covers.setdefault(path, "size=1m,mode=0755")
    clones = {}
    for path in needed:
        if any(_inside(path, c) for c in covers):
            try:
                clones[path] = _check(_libc.syscall(SYS_OPEN_TREE, AT_FDCWD, path.encode(),
                                                    OPEN_TREE_CLONE | AT_RECURSIVE | os.O_CLOEXEC), "open_tree")
            except OSError as exc:
                report.warnings.append(f"cannot mount {path} back under a private mount ({exc})")
    stranded = [n for n in needed if n not in clones and any(_inside(n, c) for c in covers)]
    hidden = []
    for path in sorted(covers, key=lambda p: p.count("/")):
        if any(_inside(n, path) for n in stranded):
            report.warnings.append(f"left {path} uncovered: Python lives below it")
        elif os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, covers[path])
            hidden += [path] if path in hide else []
    for path, fd in clones.items():
        os.makedirs(path, mode=0o755, exist_ok=True)
        _check(_libc.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, path.encode(), MOVE_MOUNT_F_EMPTY_PATH), "move_mount")
        os.close(fd)
    for path in hide:
        if path in covers or not os.path.exists(path):
            continue  # covered above, or gone under a cover
        if any(_inside(n, path) for n in needed):
            report.warnings.append(f"cannot hide {path}: Python itself lives there")
            continue
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555")
        else:
            _mount("/dev/null", path, None, MS_BIND)
        hidden.append(path)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    report.isolation.append("own mount and PID namespaces, private /tmp, fresh /proc")
    if hidden:
        report.isolation.append("hidden: " + ", ".join(sorted(hidden)))
    return "/tmp" in covers


def _make_workdir(report: Report, private_tmp: bool, uid: int | None, name: str, text: str) -> None:
    """A fresh folder holding only the notebook, plus home and temp folders for the learner's code."""
    base = "/tmp" if private_tmp else tempfile.mkdtemp(prefix="redis-workbook-worker-")
    report.cleanup = "" if private_tmp else base
    folders = {sub: os.path.join(base, sub) for sub in ("work", "home", "tmp")}
    for folder in folders.values():
        os.makedirs(folder, mode=0o700, exist_ok=True)
    notebook = Path(folders["work"]) / os.path.basename(name)
    notebook.write_text(text, encoding="utf-8")
    if uid is not None:
        for path in [*([] if private_tmp else [base]), *folders.values(), str(notebook)]:
            os.chown(path, uid, NOGROUP)
    report.workdir = folders["work"]
    os.environ.update({
        "HOME": folders["home"], "TMPDIR": folders["tmp"], "IPYTHONDIR": os.path.join(folders["home"], ".ipython"),
        "MPLCONFIGDIR": os.path.join(folders["home"], ".matplotlib"),
        "XDG_CACHE_HOME": os.path.join(folders["home"], ".cache"),
    })
    tempfile.tempdir = None  # re-read TMPDIR


def _set_limits(limits: Limits, fresh_uid: bool, report: Report) -> None:
    processes = limits.processes if fresh_uid else limits.processes + _tasks_of(os.getuid())
    wanted = {
        resource.RLIMIT_AS: limits.memory_mb * 1024 * 1024,
        resource.RLIMIT_CPU: limits.cpu_seconds,
        resource.RLIMIT_FSIZE: limits.file_mb * 1024 * 1024,
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_NPROC: processes,
    }
    for kind, value in wanted.items():
        _, hard = resource.getrlimit(kind)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        try:
            resource.setrlimit(kind, (value, value))
        except (ValueError, OSError) as exc:
            report.warnings.append(f"could not set resource limit {kind}: {exc}")
    report.isolation.append(f"limits: {limits.memory_mb} MiB memory, {limits.cpu_seconds} s CPU, "
                            f"{limits.file_mb} MiB per file, {processes} processes")


def _tasks_of(uid: int) -> int:
    """Threads the user already runs (RLIMIT_NPROC counts them all, not just this worker's)."""
    count = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if fields.get("Uid", "").split()[:1] == [str(uid)]:
            count += int(fields.get("Threads", "1").strip() or 1)
    return count


def _drop_privileges(uid: int, report: Report) -> None:
    blocked = [p for p in needed_paths() if _blocking_ancestor(p)]
    if blocked:
        report.warnings.append(f"learner code keeps running as root: an unprivileged user could not reach Python in "
                               f"{', '.join(blocked)}")
        return
    os.setgroups([])
    os.setgid(NOGROUP)
    os.setuid(uid)
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    die_with_parent()
    report.isolation.append(f"runs as uid {uid}, gid {NOGROUP}, no_new_privs")


def as_dict(report: Report) -> dict:
    return asdict(report)
