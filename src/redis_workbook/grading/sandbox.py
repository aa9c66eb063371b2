"""The worker's sandbox, entered before any learner code runs.

Three modes, chosen by the grader (`mode()` says which this machine allows):

- "root" (the grader runs as root on Linux): new mount, PID, network and IPC
  namespaces, then an unprivileged uid of its own (UID_BASE + the worker's pid:
  RLIMIT_NPROC counts per uid, so it bounds this worker alone, and no two
  learners can signal each other), group nogroup, no supplementary groups.
- "user" (an ordinary user: a Codespace, a JupyterHub instructor): the same
  namespaces inside a new user namespace (Debian 12 and most distributions allow
  them), then every capability dropped. Learner code keeps the instructor's uid
  outside, but sees and can write nothing of theirs.
- "uid" (root where namespaces are forbidden: a default Docker container, without
  CAP_SYS_ADMIN and under Docker's seccomp profile, e.g. Gradescope's; chosen
  with `grade --sandbox uid`, never by `mode()`): no namespaces, but the same
  fresh uid, gid nogroup, no capabilities, no_new_privs and system-call filter as
  "root", and sockets of the Unix family only, so it reaches the grader's servers
  through the gateway's sockets and no network. It sees the machine's files that
  others may read: the grader's files must be readable by their owner only, which
  it checks before any learner code runs (`_check_hidden`: it refuses to start
  otherwise). No System V IPC or message queues (with no IPC namespace their memory
  would belong to no process and outlive it). Its processes are ended by uid
  (`kill_user`), even those that left the worker's process group, and what it left
  in the machine's shared folders goes with them (`remove_files_of`); the gateway
  admits its uid alone. With no cgroup box (a default container has none), its
  oom_score_adj is 1000: when the container runs out of memory, learner code goes first.
- "none" (`--unsafe-no-sandbox`, or the learner's own `check`): limits and a
  fresh working folder only; `warnings` say what is not contained.

In "root" and "user" mode the learner sees an allow-list, not the host: a new root
(tmpfs, read-only) holding read-only binds of the system folders (/usr, /etc,
/lib*, /bin, /sbin, /sys), the Python installation and venv, the package, the
folder with the Unix sockets of the servers the grader exposes, a minimal /dev,
a fresh /proc, and size-capped private tmpfs on /tmp, /var/tmp and /dev/shm. The
network namespace has only `lo`: the grader's servers are reached through those
sockets (see gateway.py), nothing else is. The worker becomes process 1 of its PID
namespace, so when it dies the kernel kills everything the learner started; the
tmpfs, the IPC objects and the network namespace go with it. Then no_new_privs.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from redis_workbook.server import die_with_parent

UID_BASE = 2_000_000_000
NOGROUP = 65534
MODES = ("root", "user", "uid", "none")
NAMESPACED = ("root", "user")
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
NAMESPACES = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MNT_DETACH, AT_FDCWD, AT_RECURSIVE = 2, -100, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 1, 2
SYS_MOUNT_SETATTR = 442  # one number on every architecture (Linux 5.12)
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 24, 38, 47
PR_CAP_AMBIENT_CLEAR_ALL, CAPABILITY_VERSION_3 = 4, 0x20080522
# /sys only for the CPU count libraries read: the rest shows the host's devices and every classmate's cgroup.
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/sys/devices/system/cpu")
DEVICES = ("null", "zero", "full", "random", "urandom")
PRIVATE_TMP = ("/tmp", "/var/tmp", "/dev/shm")
OLD_ROOT = "/.old-root"


@dataclass
class Limits:
    """What one submission may use.

    `memory_mb` is each process's address space (a single memory bomb gets a MemoryError);
    `redis_mb` the `maxmemory` of every Redis it reaches. Where a cgroup can be made (box.py),
    all of its processes and its own Redis together get `box_mb` and `processes`; elsewhere
    RLIMIT_NPROC bounds its processes.
    """

    memory_mb: int = 2048
    cpu_seconds: int = 3600
    file_mb: int = 64
    processes: int = 128
    open_files: int = 1024
    tmp_mb: int = 256
    redis_mb: int = 256
    cpus: float = 1.0

    @property
    def box_mb(self) -> int:
        """The whole submission: one process at its limit, its two Redis servers full, room for page cache."""
        return self.memory_mb + 2 * (self.redis_mb + 64) + 256


@dataclass
class Report:
    """What the sandbox did, for the grader's log and the learner's feedback."""

    mode: str = "none"
    uid: int | None = None  # the learner's own uid ("root" and "uid" modes)
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


# ---------------------------------------------------------------------------------------------- the grader's side
@functools.cache
def mode() -> tuple[str, str]:
    """The strongest mode this machine allows (tried for real, once per process), and why when it is "none".

    Root in a container without CAP_SYS_ADMIN, or a kernel or seccomp profile that forbids user
    namespaces, cannot enter a namespace: each mode is tried in a throwaway process first.
    """
    if not sys.platform.startswith("linux"):
        return "none", f"namespaces need Linux (this is {platform.system()})"
    if platform.machine() not in SYS_PIVOT_ROOT:
        return "none", f"the sandbox knows no pivot_root on {platform.machine()}"
    reasons = []
    for candidate in ("root", "user") if os.geteuid() == 0 else ("user",):
        environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OPENBLAS_NUM_THREADS": "1",
                       "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        done = subprocess.run([sys.executable, "-s", "-B", "-c", PROBE, candidate], capture_output=True, text=True,
                              env=environment, timeout=60)
        if done.returncode == 0:
            return candidate, ""
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        reasons.append(f"{candidate} mode: {last}")
    return "none", "; ".join(reasons) + (
        " (user namespaces may be off: see /proc/sys/kernel/unprivileged_userns_clone and "
        "/proc/sys/user/max_user_namespaces; in Docker, the default seccomp profile and a missing "
        "CAP_SYS_ADMIN forbid them)")


PROBE = ("import sys\nfrom redis_workbook.grading import sandbox\n"
         "sandbox.enter({'mode': sys.argv[1]}, 'probe.ipynb', '{}')\n")


# ---------------------------------------------------------------------------------------------- the worker's side
def enter(settings: dict, notebook_name: str, notebook_text: str,
          announce: Callable[[int], None] = lambda pid: None) -> Report:
    """Confine this process; returns what was done. Forks: the caller continues in the child.

    `announce(pid)` tells the grader the host pid of the namespace's process 1, so it can end the
    whole namespace even if the learner's code leaves the process group and clears its death signal.
    """
    limits = Limits(**settings.get("limits", {}))
    report = Report(mode=settings.get("mode", "none"))
    if report.mode not in MODES:
        raise ValueError(f"sandbox mode must be one of {MODES}, got {report.mode!r}")
    uid = UID_BASE + os.getpid() if report.mode in ("root", "uid") else None
    report.uid = uid
    if report.mode in NAMESPACED:
        threads = len(os.listdir("/proc/self/task"))
        if threads != 1:
            raise RuntimeError(f"the worker must be single-threaded to enter its namespaces ({threads} threads)")
        outside = (os.getuid(), os.getgid())
        _check(_libc.unshare(NAMESPACES | (CLONE_NEWUSER if report.mode == "user" else 0)), "unshare")
        if report.mode == "user":
            _map_ids(*outside)
        _become_namespace_init(announce)
        _private_root(settings, limits, report)
        _loopback_up()
        report.isolation.append("own mount, PID, network (loopback only) and IPC namespaces; a read-only "
                                "allow-list of the filesystem; private /tmp; fresh /proc")
    elif report.mode == "uid":
        report.isolation.append("no namespaces (this machine forbids them): a uid of its own, the grader's files "
                                "unreadable to it (checked), Unix sockets only (no network)")
        try:  # no cgroup box in a default container: when memory runs out, the kernel ends learner code first
            Path("/proc/self/oom_score_adj").write_text("1000")
        except OSError as exc:
            report.warnings.append(f"could not make learner code the first to go when memory runs out ({exc})")
        report.warnings.append("sandbox without namespaces (uid mode): learner code can read the machine's files "
                               "that every user may read and write to its shared /tmp, and has no cgroup box "
                               "unless one could be made")
    else:
        report.warnings.append("no sandbox: learner code runs as the grader's user, can read and write whatever "
                               "that user can and reach the network")
    _make_workdir(report, uid, notebook_name, notebook_text, settings.get("folder"))
    _set_limits(limits, fresh_uid=report.mode != "none", report=report)
    if report.mode != "none":
        _drop_capabilities(uid, report)
    if report.mode == "uid":
        _check_hidden(settings.get("hide", []))
    if report.mode != "none":
        _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        _filter_system_calls(report, unix_sockets_only=report.mode == "uid")
    die_with_parent(signal.SIGKILL)
    os.chdir(report.workdir)
    return report


def _map_ids(uid: int, gid: int) -> None:
    """Be the same uid and gid inside the new user namespace (the only mapping an ordinary user may write)."""
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as handle:
            handle.write(text)


def _become_namespace_init(announce: Callable[[int], None]) -> None:
    """Fork: the child is process 1 of the new PID namespace; this process waits and mirrors how it ended."""
    announced_r, announced_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(announced_w)
        os.read(announced_r, 1)  # EOF once the grader has been told our pid: it hears of us before our replies
        os.close(announced_r)
        return
    announce(pid)
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
    """The folders Python needs: the installation, the venv, sys.path."""
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


def _private_root(settings: dict, limits: Limits, report: Report) -> None:
    """Pivot into a fresh tmpfs root, bind the allow-list into it read-only, then drop the old root."""
    allow = _outermost([*needed_paths(), *(p for p in settings.get("expose", []) if p)])
    hide = [os.path.realpath(p) for p in settings.get("hide", [])]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0755")
    os.mkdir("/tmp" + OLD_ROOT)
    _check(_libc.syscall(SYS_PIVOT_ROOT[platform.machine()], b"/tmp", ("/tmp" + OLD_ROOT).encode()), "pivot_root")
    os.chdir("/")
    for path in SYSTEM:
        _bind(path, report)
    for path in PRIVATE_TMP:
        os.makedirs(path, exist_ok=True)
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={limits.tmp_mb}m,mode=1777")
    os.chmod("/dev", 0o755)
    for name in DEVICES:
        Path(f"/dev/{name}").touch()
        _mount(f"{OLD_ROOT}/dev/{name}", f"/dev/{name}", None, MS_BIND)
    for number, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{number}", f"/dev/{name}")
    os.symlink("/proc/self/fd", "/dev/fd")
    for path in allow:  # Python, the venv, the package, the sockets: binds inside the private /tmp work too
        _bind(path, report)
    os.makedirs("/proc", exist_ok=True)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)  # while the old /proc is still visible
    hidden = [path for path in hide if any(_inside(path, a) for a in allow) and _cover(path)]
    _check(_libc.umount2(OLD_ROOT.encode(), MNT_DETACH), "umount the old root")
    os.rmdir(OLD_ROOT)
    _read_only("/", recursive=False)
    if hidden:
        report.isolation.append("hidden: " + ", ".join(sorted(hidden)))


def _bind(path: str, report: Report) -> None:
    """Bind OLD_ROOT/path at path, read-only; a symlink (e.g. /lib -> usr/lib) is copied as a symlink."""
    source = OLD_ROOT + path
    if os.path.islink(source):
        if not os.path.lexists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.symlink(os.readlink(source), path)
        return
    if not os.path.exists(source):
        return
    if os.path.isdir(source):
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Path(path).touch()
    try:
        _mount(source, path, None, MS_BIND | MS_REC)
        _read_only(path, recursive=True)
    except OSError as exc:
        report.warnings.append(f"could not show {path} to the notebook read-only ({exc})")


def _read_only(path: str, recursive: bool) -> None:
    attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    if _libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), flags, ctypes.byref(attr), 32) == 0:
        return
    # Before Linux 5.12: the top mount only.
    _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | (MS_NODEV if path == "/" else 0))


def _cover(path: str) -> bool:
    """Hide a secret that lies inside an allowed folder: an empty read-only tmpfs, or /dev/null for a file."""
    if os.path.isdir(path):
        _mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555")
        return True
    if os.path.exists(path):
        _mount("/dev/null", path, None, MS_BIND)
        return True
    return False


def _loopback_up() -> None:
    """`lo` up in the new network namespace: the learner's own servers may listen there, reaching nothing else."""
    import fcntl
    import socket
    import struct

    iff_up, iff_loopback, iff_running, siocsifflags = 0x1, 0x8, 0x40, 0x8914
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH22x", b"lo", iff_up | iff_loopback | iff_running))


def _make_workdir(report: Report, uid: int | None, name: str, text: str, folder: str | None) -> None:
    """A fresh folder holding only the notebook, plus home and temp folders for the learner's code.

    Without namespaces it lies in `folder`, the submission's private folder, which the grader's
    reaper removes even if the grader is killed.
    """
    namespaced = report.mode in NAMESPACED
    base = "/tmp" if namespaced else tempfile.mkdtemp(prefix="worker-", dir=folder)
    report.cleanup = "" if namespaced else base
    folders = {sub: os.path.join(base, sub) for sub in ("work", "home", "tmp")}
    for folder in folders.values():
        os.makedirs(folder, mode=0o700, exist_ok=True)
    notebook = Path(folders["work"]) / os.path.basename(name)
    notebook.write_text(text, encoding="utf-8")
    if uid is not None:
        for path in [*folders.values(), str(notebook), *([] if namespaced else [base])]:
            os.chown(path, uid, NOGROUP)
    report.workdir = folders["work"]
    os.environ.update({
        "HOME": folders["home"], "TMPDIR": folders["tmp"], "IPYTHONDIR": os.path.join(folders["home"], ".ipython"),
        "MPLCONFIGDIR": os.path.join(folders["home"], ".matplotlib"),
        "XDG_CACHE_HOME": os.path.join(folders["home"], ".cache"),
    })
    tempfile.tempdir = None  # re-read TMPDIR


def _set_limits(limits: Limits, fresh_uid: bool, report: Report) -> None:
    """rlimits for every process; in a namespace RLIMIT_NPROC counts only this worker's processes."""
    processes = limits.processes if fresh_uid else limits.processes + _tasks_of(os.getuid())
    wanted = {
        resource.RLIMIT_AS: limits.memory_mb * 1024 * 1024,
        resource.RLIMIT_CPU: limits.cpu_seconds,
        resource.RLIMIT_FSIZE: limits.file_mb * 1024 * 1024,
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_NPROC: processes,
        resource.RLIMIT_NOFILE: limits.open_files,
    }
    for kind, value in wanted.items():
        _, hard = resource.getrlimit(kind)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        try:
            resource.setrlimit(kind, (value, value))
        except (ValueError, OSError) as exc:
            report.warnings.append(f"could not set resource limit {kind}: {exc}")
    report.isolation.append(f"per process: {limits.memory_mb} MiB memory, {limits.cpu_seconds} s CPU, "
                            f"{limits.file_mb} MiB per file, {limits.open_files} open files; "
                            f"{processes} processes")


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


def _drop_capabilities(uid: int | None, report: Report) -> None:
    """No capability left, none to regain: the learner cannot remount, unmount, trace or change ids.

    As root: a uid of its own, gid nogroup. In a user namespace: the same uid, capabilities cleared.
    """
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0:
            break  # past the last capability this kernel knows
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    if uid is not None:
        os.setgroups([])
        os.setgid(NOGROUP)
        os.setuid(uid)  # clears every capability
        report.isolation.append(f"runs as uid {uid}, gid {NOGROUP}, no capabilities, no_new_privs")
        return
    header = (ctypes.c_uint32 * 2)(CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(_libc.capset(ctypes.byref(header), ctypes.byref(data)), "capset")
    report.isolation.append(f"runs as the grader's uid {os.getuid()} in its own user namespace, no capabilities, "
                            "no_new_privs")


def _check_hidden(paths: list[str]) -> None:
    """Without a mount namespace nothing can be covered: as the learner's uid, every secret must be out of reach.

    A folder is out of reach when this uid cannot enter it (listing alone is not enough: known names inside
    would still open), a file when it cannot read it; a path it cannot even look at is out of reach too.
    """
    exposed = [path for path in paths if os.access(path, os.X_OK if os.path.isdir(path) else os.R_OK)]
    if exposed:
        raise RuntimeError(
            f"learner code could read the grader's files here ({', '.join(exposed)}): without namespaces the "
            "sandbox cannot hide them. Make them readable by their owner only (chmod -R go-rwx PATH) or grade "
            "where namespaces work (as root outside a container, or with user namespaces allowed).")


def kill_user(uid: int) -> None:
    """SIGKILL every process of `uid`, a uid-mode worker's own (also those that left its process group); root only.

    kill(-1) from a process of that uid reaches exactly the processes of that uid, but itself. The child makes
    system calls only (no exec: the interpreter may lie where that uid cannot read, e.g. below /root).
    """
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(NOGROUP, NOGROUP, NOGROUP)
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


SHARED_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")  # where any uid may write


def remove_files_of(uid: int) -> None:
    """Remove what `uid` left in the machine's shared folders (uid mode has no private /tmp), at any depth."""
    for top in SHARED_FOLDERS:
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                continue


def as_dict(report: Report) -> dict:
    return asdict(report)


# ---------------------------------------------------------------------------------------------- seccomp
# System calls learner code never needs and that only widen the kernel it can poke at: new namespaces
# (a nested user namespace would give it capabilities over fresh mounts), mounts, BPF, perf, userfaultfd,
# io_uring, keyrings. They fail with EPERM; clone3 with ENOSYS, so the C library falls back to clone,
# whose flags the filter can read.
DENIED_CALLS = {
    "x86_64": {"unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155, "bpf": 321,
               "perf_event_open": 298, "userfaultfd": 323, "keyctl": 250, "add_key": 248, "request_key": 249,
               "ptrace": 101},
    "aarch64": {"unshare": 97, "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41, "bpf": 280,
                "perf_event_open": 241, "userfaultfd": 282, "keyctl": 219, "add_key": 217, "request_key": 218,
                "ptrace": 117},
}
# System V IPC and POSIX message queues: without an IPC namespace their objects belong to no process, outlive the
# worker and count against the machine's memory (uid mode denies them; the namespaced modes have their own).
SHARED_IPC = {
    "x86_64": (29, 30, 31, 64, 65, 66, 67, 68, 69, 70, 71, 220, 240, 241, 242, 243, 244, 245),
    "aarch64": (180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 192, 193, 194, 195, 196, 197),
}
NEW_MOUNT_API = range(428, 435)  # open_tree .. fspick, the same on every architecture
IO_URING = range(425, 428)
MOUNT_SETATTR, CLONE3 = 442, 435
CLONE = {"x86_64": 56, "aarch64": 220}
SOCKET = {"x86_64": 41, "aarch64": 198}
AF_UNIX = 1
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
CLONE_NEW_ANY = 0x7E020080  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
LD_W_ABS, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
RET_ALLOW, RET_ERRNO = 0x7FFF0000, 0x00050000
EPERM, ENOSYS = 1, 38
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2


def _seccomp_program(machine: str, unix_sockets_only: bool = False) -> list[tuple[int, int, int, int]]:
    """A classic BPF program: (code, jump if true, jump if false, k), jumps already relative.

    `unix_sockets_only` (uid mode, no namespaces): socket() of any family but AF_UNIX fails with EPERM (no network
    namespace to hold it), and so do System V IPC and POSIX message queues (no IPC namespace to end them).
    """
    denied = [*DENIED_CALLS[machine].values(), *NEW_MOUNT_API, *IO_URING, MOUNT_SETATTR,
              *(SHARED_IPC[machine] if unix_sockets_only else ())]
    sockets: list[tuple[int | str, str | int, str | int, int]] = []
    checked: list[tuple[int | str, str | int, str | int, int]] = []
    if unix_sockets_only:
        sockets = [(JEQ, "socket", 0, SOCKET[machine])]
        checked = [("socket", 0, 0, 0), (LD_W_ABS, 0, 0, 16), (JEQ, 0, "deny", AF_UNIX), (RET, 0, 0, RET_ALLOW)]
    program: list[tuple[int | str, str | int, str | int, int]] = [
        (LD_W_ABS, 0, 0, 4), (JEQ, 0, "deny", AUDIT_ARCH[machine]),  # another ABI (e.g. 32-bit calls): no
        (LD_W_ABS, 0, 0, 0), (JGE, "deny", 0, 0x40000000),  # x32 calls: no
        *[(JEQ, "deny", 0, number) for number in denied],
        (JEQ, "enosys", 0, CLONE3), (JEQ, "clone", 0, CLONE[machine]), *sockets,
        (RET, 0, 0, RET_ALLOW),
        ("clone", 0, 0, 0), (LD_W_ABS, 0, 0, 16), (JSET, "deny", 0, CLONE_NEW_ANY), (RET, 0, 0, RET_ALLOW),
        *checked,
        ("deny", 0, 0, 0), (RET, 0, 0, RET_ERRNO | EPERM),
        ("enosys", 0, 0, 0), (RET, 0, 0, RET_ERRNO | ENOSYS),
    ]
    labels, code = {}, []
    for instruction in program:
        if isinstance(instruction[0], str):
            labels[instruction[0]] = len(code)
        else:
            code.append(instruction)
    return [(op, *(labels[j] - i - 1 if isinstance(j, str) else j for j in (jt, jf)), k)  # type: ignore[misc]
            for i, (op, jt, jf, k) in enumerate(code)]


def _filter_system_calls(report: Report, unix_sockets_only: bool = False) -> None:
    machine = platform.machine()
    if machine not in AUDIT_ARCH:
        report.warnings.append(f"no system-call filter on {machine}")
        return

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Filter))]

    instructions = _seccomp_program(machine, unix_sockets_only)
    filters = (Filter * len(instructions))(*[Filter(*i) for i in instructions])
    program = Program(len(instructions), filters)
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0), "seccomp")
    report.isolation.append("no new namespaces, mounts, BPF, perf, userfaultfd, io_uring, keyrings or ptrace"
                            + ("; sockets of the Unix family only; no System V IPC or message queues"
                               if unix_sockets_only else ""))
