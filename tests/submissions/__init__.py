"""Submission notebooks for the grading tests: a builder, and a class of hostile and broken ones.

Each hostile submission does one bad thing next to code that is otherwise correct
(the grader suite's own 06_recommender template, tests/grader_mutants.py), so the
tests can check both the message it gets and that it keeps the points it earned.
Placeholders in the sources ({REPO}, {SUBMITTED}, {OUT}, {EXTRA}, {TOKEN}) are
filled in by `build_class`, as a learner who knows the grader's layout would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from grader_mutants import COMMON, MUTANTS, TEMPLATES

REPO = Path(__file__).resolve().parents[2]
GOOD = COMMON + TEMPLATES["06_recommender"]
ENDSWITH = next(m for m in MUTANTS if m.assignment == "06_recommender" and "endswith" in m.name).source()
BROKEN_SIMILAR = "def similar_products(r, product_id, k=5):\n    return []\n"


def write_notebook(path: Path, *sources: str, metadata: dict | None = None) -> Path:
    """A notebook file with one code cell per source, as Jupyter saves it."""
    cells = [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [],
              "source": source.splitlines(keepends=True)} for i, source in enumerate(sources)]
    notebook = {"cells": cells, "metadata": metadata or {"kernelspec": {"name": "python3", "language": "python",
                                                                        "display_name": "Python 3"}},
                "nbformat": 4, "nbformat_minor": 5}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(notebook, indent=1))
    return path


FORK_LOOP = '''
import os
import time

children = []
for i in range(400):
    try:
        pid = os.fork()
    except OSError as exc:
        print("fork refused after", i, "children:", type(exc).__name__)
        break
    if pid == 0:
        time.sleep(300)
        os._exit(0)
    children.append(pid)
'''

MONKEYPATCH = '''
import _pytest.outcomes
import pytest

import redis_workbook.grading.plugin as plugin
import redis_workbook.grading.remote as remote

pytest.fail = _pytest.outcomes.fail = lambda *args, **kwargs: None
plugin.failure_message = lambda *args, **kwargs: ""
plugin.Grading.record = lambda self, report: None
remote.Notebook.request = lambda *args, **kwargs: []
'''

READ_SECRETS = '''
import glob
import os
from pathlib import Path

import redis_workbook

targets = ["{REPO}/solutions/06_recommender.ipynb", "{REPO}/grader/test_06_recommender.py",
           "{REPO}/grader/points.toml", "{REPO}/.git/HEAD", "{EXTRA}/test_06_recommender_private.py",
           "{SUBMITTED}/a_solution/06_recommender/06_recommender.ipynb",
           str(Path(redis_workbook.__file__).parents[2] / "grader" / "conftest.py")]
found = []
for target in targets:
    try:
        Path(target).read_bytes()
        found.append(target)
    except OSError:
        pass
for path in glob.glob("/proc/[0-9]*/cmdline") + glob.glob("/proc/[0-9]*/environ"):
    try:
        text = Path(path).read_bytes()
    except OSError:
        continue
    if b"requirepass" in text or b"workbook-grader" in text:
        found.append(path)
print("READ", sorted(found))
'''

WRITE_OUTSIDE = '''
import os

targets = ["{REPO}/grader/pwned-{TOKEN}.txt", "{REPO}/pwned-{TOKEN}.txt",
           "{SUBMITTED}/a_solution/06_recommender/pwned-{TOKEN}.txt", "{OUT}/pwned-{TOKEN}.txt",
           os.path.join(os.getcwd(), "..", "pwned-{TOKEN}.txt"), "/tmp/pwned-{TOKEN}.txt",
           "/var/tmp/pwned-{TOKEN}.txt", "/dev/shm/pwned-{TOKEN}.txt"]
wrote = []
for target in targets:
    try:
        with open(target, "w") as handle:
            handle.write("pwned")
        wrote.append(target)
    except OSError as exc:
        print("refused:", target, type(exc).__name__)
print("WROTE", wrote)
'''

NETWORK_SCAN = '''
import socket

ports = {6379, 22, 80, 8000, 8888}
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(table).read().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A":  # listening
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
reached = []
for port in sorted(ports):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        reached.append(port)
    except OSError:
        pass
print("REACHED", reached)
'''

# Fills its own Redis (memory and clients), then makes every call into similar_products
# open connections to the Redis under test and keep them, as many as it is given.
EXHAUST_REDIS = '''
import socket

import redis
import redis_workbook

own = redis_workbook.connect()
try:
    for i in range(100_000):
        own.set(f"fill:{i}", b"x" * 1_000_000)
except redis.RedisError as exc:
    print("own Redis full:", type(exc).__name__)
held = []
try:
    for i in range(20_000):  # raw connections to its own Redis, until a limit says no
        client = socket.socket(socket.AF_UNIX)
        client.connect(own.connection_pool.connection_kwargs["path"])
        held.append(client)
except OSError as exc:
    print("own clients stop after", len(held), type(exc).__name__)
for client in held:  # give the file descriptors back: the checks' calls need some
    client.close()

_similar = similar_products
grabbed = []


def similar_products(r, product_id, k=5):
    pool = r.connection_pool
    try:
        for _ in range(1000):
            client = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class,
                                                                      **pool.connection_kwargs))
            client.ping()
            grabbed.append(client)
    except redis.RedisError:
        print("grabbed", len(grabbed), "connections")
    return _similar(r, product_id, k)
'''

MEMORY_CHILDREN = '''
import os
import time

report, told = os.pipe()  # each child writes its pid once its memory is written
os.set_blocking(report, False)
children = []
for _ in range(5):
    pid = os.fork()
    if pid == 0:
        try:
            hog = b"x" * (450 * 1024 * 1024)  # written, so resident (a bytearray's zero pages would not be)
            print("ALLOCATED", flush=True)
            os.write(told, f"{os.getpid()} ".encode())
            time.sleep(30)
        finally:
            os._exit(0)
    children.append(pid)
allocated, killed = set(), set()
'''

# Cells of their own, each waiting up to 3.5 s (the class's cell limit is 4 s) until every child has written its
# memory or been killed: a box at its limit first evicts page cache, which on a busy machine takes seconds
# before the kernel kills anything.
MEMORY_CHILDREN_COUNT = 'print("KILLED", len(killed), flush=True)\n'
MEMORY_CHILDREN_WAIT = '''
deadline = time.monotonic() + 3.5
while len(allocated | killed) < len(children) and time.monotonic() < deadline:
    try:
        allocated |= {int(pid) for pid in os.read(report, 4096).split()}
    except BlockingIOError:
        pass
    killed |= {pid for pid in children if pid not in killed and os.waitpid(pid, os.WNOHANG)[0] == pid}
    time.sleep(0.05)
'''

LEAVE_BEHIND = '''
import ctypes
import os

libc = ctypes.CDLL(None, use_errno=True)
segment = libc.shmget(0x5E000000 | int("{TOKEN}"[:6], 16), 4096, 0o1666)  # IPC_CREAT | 0666
print("SHM", segment)
for target in ("/run/lock/pwned-{TOKEN}", "/dev/shm/pwned-{TOKEN}", "/var/tmp/pwned-{TOKEN}", "/tmp/pwned-{TOKEN}"):
    try:
        open(target, "w").write("x")
        print("WROTE", target)
    except OSError as exc:
        print("refused", target, type(exc).__name__)
if os.fork() == 0:
    os.setsid()
    import time

    time.sleep(3600)
'''

READ_OTHER_RUNS = '''
import glob
from pathlib import Path

found = []
for pattern in ("{OTHER}/*", "{OTHER}/*/*/*", "/tmp/*", "/tmp/*/*", "/home/*/*", "/root/*", "/work/*/*"):
    found += [p for p in glob.glob(pattern) if "{TOKEN}" in p]
print("OTHER", sorted(found))
'''

# Keeps the Redis under test busy for a minute with one write of queued commands (no @dangerous command needed).
STALL_REDIS = '''
import socket

_track_view = track_view
_held = []


def _command(*args):
    args = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    return b"*%d\\r\\n" % len(args) + b"".join(b"$%d\\r\\n%s\\r\\n" % (len(a), a) for a in args)


def track_view(r, user_id, product_id, max_views=10, ttl=3600):
    if not _held:
        pipe = r.pipeline(transaction=False)
        for start in range(0, 400_000, 20_000):
            pipe.sadd("big", *range(start, start + 20_000))
        pipe.execute()
        kwargs = r.connection_pool.connection_kwargs
        raw = socket.socket(socket.AF_UNIX)
        raw.connect(kwargs["path"])
        raw.sendall(_command("AUTH", kwargs["username"], kwargs["password"])
                    + _command("SUNIONSTORE", "copy", "big", "big") * 300)
        _held.append(raw)
    return _track_view(r, user_id, product_id, max_views, ttl)
'''

SLOW = "import time\n\ntime.sleep(3.5)\n"

# student -> the cells of their notebook (06_recommender), or a special kind handled by build_class
CLASS: dict[str, tuple[str, ...]] = {
    "a_solution": ("<solution notebook>",),
    "c_template": (GOOD,),
    "d_endswith": (ENDSWITH,),
    "h_infinite_loop": (GOOD, "while True:\n    pass\n"),
    "h_long_sleep": (GOOD, "import time\n\ntime.sleep(3600)\n"),
    "h_sys_exit": (GOOD, "import sys\n\nsys.exit(3)\n"),
    "h_os_exit": ("import os\n\nos._exit(7)\n", GOOD),
    "h_segfault": (GOOD, "import ctypes\n\nctypes.string_at(0)\n"),
    "h_memory_bomb": (GOOD, "hog = []\nwhile True:\n    hog.append(bytearray(50_000_000))\n"),
    "h_fork_loop": (GOOD, FORK_LOOP),
    "h_redis_admin": (GOOD, "import redis_workbook\n\nr = redis_workbook.connect()\nr.flushall()\n",
                      "r.config_set('maxmemory', '1mb')\n", "r.shutdown(nosave=True)\n"),
    "h_monkeypatch": (GOOD + BROKEN_SIMILAR, MONKEYPATCH),
    "h_read_secrets": (GOOD, READ_SECRETS),
    "h_write_outside": (GOOD, WRITE_OUTSIDE),
    "h_print_100mb": (GOOD, "print('x' * 100_000_000)\n"),
    "h_hangs_in_call": (GOOD, "def similar_products(r, product_id, k=5):\n    while True:\n        pass\n"),
    "h_network_scan": (GOOD, NETWORK_SCAN),
    "h_exhaust_redis": (GOOD, EXHAUST_REDIS),
    "h_memory_children": (GOOD, MEMORY_CHILDREN, *[MEMORY_CHILDREN_WAIT] * 3, MEMORY_CHILDREN_COUNT),
    "h_leave_behind": (GOOD, LEAVE_BEHIND),
    "h_read_other_runs": (GOOD, READ_OTHER_RUNS),
    "h_stalls_redis": (GOOD, STALL_REDIS),
    "h_time_budget": (GOOD, *[SLOW] * 14, "def similar_products(r, product_id, k=5):\n    import time\n\n"
                      "    time.sleep(1.8)\n    return []\n"),
    "i_invalid_json": ("<invalid json>",),
    "i_empty": ("<empty file>",),
    "i_wrong_assignment": ("<07_rag notebook>",),
    "r_redis_dies_once": ("import time\n\ntime.sleep(2.5)\n", GOOD),
    "r_redis_always_dies": ("import time\n\ntime.sleep(2.5)\n", GOOD),
}


def build_class(submitted: Path, students: list[str], fill: dict[str, str]) -> None:
    """SUBMITTED_DIR/<student>/06_recommender/<notebook> for each student of CLASS."""
    for student in students:
        folder = submitted / student / "06_recommender"
        folder.mkdir(parents=True, exist_ok=True)
        cells = CLASS[student]
        if cells[0] == "<solution notebook>":
            shutil.copy(REPO / "solutions" / "06_recommender.ipynb", folder / "06_recommender.ipynb")
        elif cells[0] == "<invalid json>":
            (folder / "06_recommender.ipynb").write_text('{"cells": [{"cell_type": "code", "source": "x = 1"')
        elif cells[0] == "<empty file>":
            (folder / "06_recommender.ipynb").write_bytes(b"")
        elif cells[0] == "<07_rag notebook>":
            shutil.copy(REPO / "solutions" / "07_rag.ipynb", folder / "07_rag.ipynb")
        else:
            filled = []
            for source in cells:
                for key, value in fill.items():
                    source = source.replace("{" + key + "}", value)
                filled.append(source)
            write_notebook(folder / "06_recommender.ipynb", *filled)
