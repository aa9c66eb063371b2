"""The sandbox's uid mode (root where namespaces are forbidden: Gradescope's containers), attacked as a red team did.

Each test runs learner-side code the way the worker does: `sandbox.enter` in uid mode in a process of
its own (everything it needs imported before, as the worker has), then what a hostile notebook would
do; the grader's side then does what `workerprocess.WorkerProcess.kill` does when a submission ends
(`sandbox.kill_user`, `sandbox.remove_files_of` and the removal of the worker's folder) and the test
looks at what is left. A failing test here is a hole, not a flaky test: it says what the learner managed.
Also here, for every mode: learner code never gets a client with the grader's rights on a grader's Redis.

Needs root (the uid mode does); skips otherwise. Each test removes what its probe left behind, hole
or not.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from redis_workbook.grading import points, sandbox
from redis_workbook.grading.enclosure import Enclosure

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the uid mode needs root")

SHARED = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
MEMORY_MB = 256  # the per-process limit the probe runs under (grade's --memory-mb)

# The learner's side: enter the uid mode, then argv[2:] says what to try; prints one JSON line.
PROBE = """
import ctypes, glob, json, os, socket, sys
from redis_workbook.grading import sandbox

report = sandbox.enter({"mode": "uid", "hide": [sys.argv[1]], "limits": {"memory_mb": MEMORY_MB}}, "probe.ipynb", "{}")
seen = {"uid": os.getuid(), "cleanup": report.cleanup, "wrote": [], "reached": []}
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
if "leave" in sys.argv[2:]:
    for folder in SHARED:
        try:
            with open(os.path.join(folder, f"redteam-{os.getuid()}"), "w") as handle:
                handle.write("left behind")
            seen["wrote"].append(folder)
        except OSError:
            pass
    seen["shm"] = libc.shmget(0, 4096, 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600
    seen["msg"] = libc.msgget(0, 0o1600)
    seen["sem"] = libc.semget(0, 1, 0o1600)
if "memory" in sys.argv[2:]:
    chunk, held = 16 << 20, 0
    for _ in range(32):  # 32 x 16 MiB, each attached, written and detached: never more than one mapped at a time
        segment = libc.shmget(0, chunk, 0o1600)
        if segment < 0:
            break
        address = libc.shmat(segment, None, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            break
        ctypes.memset(address, 1, chunk)
        libc.shmdt(ctypes.c_void_p(address))
        held += chunk
    seen["shm_bytes"] = held
if "reach" in sys.argv[2:]:
    for path in glob.glob("/tmp/rw-submission-*/sockets/*.sock"):
        client = socket.socket(socket.AF_UNIX)
        client.settimeout(1)
        try:  # a refused connection is closed at once (recv gives b""); one let through waits on the server
            client.connect(path)
            client.recv(1)
        except socket.timeout:
            seen["reached"].append(path)
        except OSError:
            pass
        finally:
            client.close()
if "poke" in sys.argv[2:]:  # the grader (root), its environment and file descriptors, ptrace, the network
    grader = int(sys.argv[3])
    poked = {}

    def trace():
        if libc.ptrace(16, grader, 0, 0) != 0:  # PTRACE_ATTACH
            raise OSError(ctypes.get_errno(), "ptrace")

    for name, attempt in (("signal", lambda: os.kill(grader, 0)),
                          ("environ", lambda: open(f"/proc/{grader}/environ", "rb").read()),
                          ("fds", lambda: os.listdir(f"/proc/{grader}/fd")),
                          ("ptrace", trace),
                          ("inet", lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)),
                          ("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))):
        try:
            attempt()
            poked[name] = "done"
        except OSError as exc:
            poked[name] = type(exc).__name__
    seen["poked"] = poked
print("ENTERED", json.dumps(seen), flush=True)
""".replace("MEMORY_MB", str(MEMORY_MB)).replace("SHARED", repr(SHARED))


def ipc_objects(uid: int) -> dict[str, list[int]]:
    """The System V shared memory, message queues and semaphores owned by `uid` (their ids)."""
    found: dict[str, list[int]] = {}
    for kind in ("shm", "msg", "sem"):
        lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()
        header = lines[0].split()
        for line in lines[1:]:
            row = dict(zip(header, line.split()))
            if int(row["uid"]) == uid:
                found.setdefault(kind, []).append(int(row[{"shm": "shmid", "msg": "msqid", "sem": "semid"}[kind]]))
    return found


def shm_bytes(uid: int) -> int:
    lines = Path("/proc/sysvipc/shm").read_text().splitlines()
    header = lines[0].split()
    return sum(int(row["size"]) for row in (dict(zip(header, line.split())) for line in lines[1:])
               if int(row["uid"]) == uid)


def leftovers(uid: int) -> list[str]:
    return [str(path) for folder in SHARED if os.path.isdir(folder) for path in Path(folder).iterdir()
            if _owner(path) == uid]


def _owner(path: Path) -> int | None:
    try:
        return path.lstat().st_uid
    except OSError:
        return None


def remove_everything_of(uid: int) -> None:
    """What the test itself cleans up, whatever the grader left."""
    sandbox.kill_user(uid)
    for path in leftovers(uid):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            Path(path).unlink(missing_ok=True)
    for kind, ids in ipc_objects(uid).items():
        for ident in ids:
            option = {"shm": "-m", "msg": "-q", "sem": "-s"}[kind]
            subprocess.run(["ipcrm", option, str(ident)], capture_output=True, check=False)


@pytest.fixture
def secret() -> Iterator[Path]:
    """A grader folder the learner's uid cannot enter (the uid mode refuses to start otherwise)."""
    folder = Path(tempfile.mkdtemp(prefix="rw-redteam-"))
    os.chmod(folder, 0o700)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def run_probe(secret: Path, *what: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, str(secret), *what], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.startswith("ENTERED"), done.stdout + done.stderr
    return json.loads(done.stdout.split(" ", 1)[1])


def end_like_the_grader(seen: dict) -> None:
    """What workerprocess.WorkerProcess.kill does once the worker is gone, in uid mode."""
    sandbox.kill_user(seen["uid"])
    sandbox.remove_files_of(seen["uid"])
    shutil.rmtree(seen["cleanup"], ignore_errors=True)


def test_uid_mode_leaves_no_files_or_ipc_objects_behind(secret: Path) -> None:
    """Files in the machine's shared /tmp, /var/tmp, /dev/shm, /run/lock go with the submission, and System V IPC
    objects (which would outlive it: no IPC namespace in uid mode) cannot be made."""
    seen = run_probe(secret, "leave")
    try:
        end_like_the_grader(seen)
        left, ipc = leftovers(seen["uid"]), ipc_objects(seen["uid"])
        assert seen["wrote"] or seen["shm"] < 0, "the probe could not write anywhere: nothing to check"
        assert (left, ipc) == ([], {}), f"left behind by learner uid {seen['uid']} after grading: {left} {ipc}"
    finally:
        remove_everything_of(seen["uid"])


def test_uid_mode_memory_stays_within_the_per_process_limit(secret: Path) -> None:
    """System V shared memory is charged to no process: attached and detached piecewise it would hold far more than
    --memory-mb (no cgroup box in a Docker container bounds it) and outlive the worker; uid mode refuses it."""
    seen = run_probe(secret, "memory")
    try:
        held = shm_bytes(seen["uid"])
        end_like_the_grader(seen)
        assert held <= MEMORY_MB << 20, (f"the learner's uid holds {held >> 20} MiB of shared memory under a "
                                         f"{MEMORY_MB} MiB limit")
    finally:
        remove_everything_of(seen["uid"])


def test_uid_mode_cannot_signal_trace_or_read_the_grader(secret: Path) -> None:
    """Blocked: the learner's uid cannot signal or ptrace a root process, read its environment (where grade puts
    --redis-url's password) or file descriptors, or open a socket of another family than Unix."""
    seen = run_probe(secret, "poke", str(os.getpid()))
    end_like_the_grader(seen)
    remove_everything_of(seen["uid"])
    assert seen["poked"] == {"signal": "PermissionError", "environ": "PermissionError", "fds": "PermissionError",
                             "ptrace": "PermissionError", "inet": "PermissionError",
                             "netlink": "PermissionError"}, seen["poked"]


def test_uid_mode_cannot_reach_another_submissions_sockets(secret: Path) -> None:
    """Another submission graded at the same time (grade --jobs N --sandbox uid): its enclosure's folder is 0711 in
    the shared /tmp (named in /tmp's listing) and its sockets 0777, but its gateway, once its own learner started,
    admits that learner's uid only: this learner could otherwise use its Redis servers or take its 64 connections."""
    target = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # stands for the other submission's Redis
    target.bind(("127.0.0.1", 0))
    target.listen(8)
    threading.Thread(target=lambda: [target.accept() for _ in range(8)], daemon=True).start()
    other = Enclosure(sandbox.Limits(), "uid")
    try:
        exposed = other.gateway.expose(target.getsockname())
        other.gateway.admit_only(sandbox.UID_BASE + 1)  # what remote does when the other's worker is ready
        seen = run_probe(secret, "reach")
        end_like_the_grader(seen)
        remove_everything_of(seen["uid"])
        assert exposed not in seen["reached"], f"learner uid {seen['uid']} connected to another submission's {exposed}"
    finally:
        other.close()
        target.close()


# 01_setup's check hands the learner's search_module_version the grader's Redis without modules (grader/conftest.py
# plain_r). Were it a client with the grader's rights, the learner's code could do anything there; that server runs in
# the grader's network namespace, so REPLICAOF would make it connect wherever the learner says.
REPLICA_ESCAPE = '''
import time

_search_module_version = search_module_version


def search_module_version(r):
    try:
        r.execute_command("REPLICAOF", "127.0.0.1", "PORT")
        time.sleep(3)  # the server would dial its new master within a second
    except Exception:
        pass
    return _search_module_version(r)
'''


def test_the_learner_gets_no_admin_client_to_reach_the_network(tmp_path: Path) -> None:
    """Any sandbox mode: the learner's code must not make a grader's server dial out (here 127.0.0.1:PORT,
    a listener of this test that nothing of the learner's should reach)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from grader_mutants import COMMON, TEMPLATES
    from submissions import write_notebook

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    dialed: list[str] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            dialed.append(connection.recv(200).decode(errors="replace"))
            connection.close()

    threading.Thread(target=accept, daemon=True).start()
    port = str(listener.getsockname()[1])
    submitted, out = tmp_path / "submitted", tmp_path / "out"
    write_notebook(submitted / "learner" / "01_setup" / "01_setup.ipynb", COMMON + TEMPLATES["01_setup"],
                   REPLICA_ESCAPE.replace("PORT", port))
    try:
        done = subprocess.run([sys.executable, "-m", "redis_workbook.cli", "grade", str(submitted), "--out", str(out)],
                              capture_output=True, text=True, timeout=600)
    finally:
        listener.close()
    report = json.loads((out / "learner" / "01_setup" / "results.json").read_text())
    assert report["extra_data"]["redis_workbook"]["status"] == "graded", done.stderr[-2000:]
    assert dialed == [], f"a grader's Redis dialed 127.0.0.1:{port} for the learner's code and sent {dialed[:1]}"


READ_GIT_OBJECT = """
import os, sys, zlib
from redis_workbook.grading import sandbox

try:
    sandbox.enter({"mode": "uid", "hide": sys.argv[2:]}, "probe.ipynb", "{}")
except RuntimeError as exc:
    print("REFUSED", exc)
    sys.exit(0)
try:
    print("READ", zlib.decompress(open(sys.argv[1], "rb").read()).decode(errors="replace"))
except OSError as exc:
    print("BLOCKED", type(exc).__name__)
"""


def test_uid_mode_checks_the_git_folder_a_worktree_points_to(tmp_path: Path) -> None:
    """grade from a git worktree: the `.git` it hides is a file naming the main repository's git folder, whose
    objects hold grader/reference.py. With everything the refusal names made owner-only, the learner's uid must
    still not read the reference answers (or the worker must refuse to start, naming that folder)."""
    base = Path(tempfile.mkdtemp(prefix="rw-redteam-git-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        main, worktree = base / "main", base / "worktree"
        (main / "grader").mkdir(parents=True)
        (main / "grader" / "reference.py").write_text("ANSWER = 'the reference answer'\n")
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
        for command in (["init", "-q"], ["add", "."], ["commit", "-qm", "grader"],
                        ["worktree", "add", "-q", str(worktree), "-b", "grading"]):
            subprocess.run([*git, "-C", str(main), *command], check=True, capture_output=True)
        blob = subprocess.run([*git, "-C", str(worktree), "rev-parse", "HEAD:grader/reference.py"], check=True,
                              capture_output=True, text=True).stdout.strip()
        loose = main / ".git" / "objects" / blob[:2] / blob[2:]
        hide = [str(p) for p in points.secret_paths(worktree / "grader")]  # what grade hides
        for path in hide[:4]:  # the worktree's own: what the refusal used to name
            if os.path.lexists(path):
                os.chmod(path, 0o700 if os.path.isdir(path) else 0o600)
        done = subprocess.run([sys.executable, "-c", READ_GIT_OBJECT, str(loose), *hide], capture_output=True,
                              text=True, timeout=60)
        assert done.stdout.startswith(("REFUSED", "BLOCKED")), (
            f"the learner's uid read the reference answers from {loose}: {done.stdout.strip()[:200]}")
    finally:
        kill_processes_of_all_probes()
        shutil.rmtree(base, ignore_errors=True)


def kill_processes_of_all_probes() -> None:
    """The probe's worker folder in /tmp (folder=None puts it there) and its uid's processes."""
    for folder in Path("/tmp").glob("worker-*"):
        owner = _owner(folder)
        if owner is not None and owner >= sandbox.UID_BASE and (folder / "work" / "probe.ipynb").exists():
            sandbox.kill_user(owner)
            shutil.rmtree(folder, ignore_errors=True)


def test_a_connection_made_before_the_default_user_is_switched_off_loses_its_rights(tmp_path: Path) -> None:
    """A red team, polling /proc as a uid-mode learner, read the `default` password of servers started with it on
    their command line and connected before backends switched `default` off: such a connection kept every right.
    The password now comes on stdin, and switching `default` off closes its connections."""
    import redis

    from redis_workbook.grading import backends
    from redis_workbook.server import EmbeddedRedis

    server = EmbeddedRedis(unix_socket=tmp_path / "notebook.sock", parent=tmp_path)
    server.start()
    early = redis.Redis(unix_socket_path=str(tmp_path / "notebook.sock"), password=server.password)
    early.ping()
    under_test = backends.secure("embedded", server.url, stop=server.stop, own=True)
    try:
        try:
            rights = early.acl_whoami(), early.config_get("maxmemory")
        except (redis.RedisError, OSError) as exc:
            rights = (type(exc).__name__,)
        assert len(rights) == 1, f"the connection opened with the command line's password still runs CONFIG: {rights}"
    finally:
        early.close()
        under_test.stop()
