"""grade's fork server (grading/forkserver.py), driven directly: what one forked grading process may share with
the next (a red team's finds).

Each test starts a real server, forks real pytest runs of a small test module from it and stops it afterwards.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from redis_workbook.grading import forkserver
from redis_workbook.grading.forkserver import ForkServer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server is Linux only")

# What a forked grading process writes: the hash() seed its notebook's worker would get, or that it ran at all.
PROBE = '''
import os
import time

from redis_workbook.grading import workerprocess


def test_probe():
    with open(os.environ["PROBE_OUT"], "w") as handle:
        handle.write(workerprocess.worker_environment("redis://unused")["PYTHONHASHSEED"])
    time.sleep(float(os.environ.get("PROBE_SLEEP", "0")))
'''


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ForkServer]:
    (tmp_path / "test_probe.py").write_text(PROBE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    started = ForkServer(tmp_path, dict(os.environ), tmp_path / "fork-server.log")
    yield started
    started.close()


def spawn(server: ForkServer, folder: Path, name: str, sleep: float = 0) -> forkserver.Forked:
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PROBE_OUT": str(folder / f"{name}.out"),
           "PROBE_SLEEP": str(sleep)}
    (folder / f"{name}.log").touch()  # grade makes it first, as here: the child appends to it
    return server.spawn([str(folder / "test_probe.py"), "-q", "-p", "no:cacheprovider"], env, folder,
                        folder / f"{name}.log", f"probe {name}")


def test_each_forked_grading_process_gives_its_notebook_a_hash_seed_of_its_own(server: ForkServer,
                                                                               tmp_path: Path) -> None:
    """The server imports workerprocess once for the class; its seed must not be every classmate's seed."""
    children = [spawn(server, tmp_path, f"child{i}") for i in range(3)]
    assert [child.wait(timeout=120) for child in children] == [0, 0, 0], (tmp_path / "child0.log").read_text()
    seeds = [(tmp_path / f"child{i}.out").read_text() for i in range(3)]
    assert len(set(seeds)) == 3, seeds
