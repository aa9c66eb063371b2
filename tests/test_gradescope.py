"""The Gradescope autograder, run the way Gradescope runs it, in a fresh Debian root under Docker.

`redis-workbook gradescope 06_recommender` builds the zip; a Docker image is made from a minimal Debian
bookworm root (debootstrap, with python3 as on Gradescope's Ubuntu base images), not from this venv;
the zip's own `setup.sh` builds the autograder image in it as root, and `run_autograder` grades a good,
a broken and a hostile submission, each in a fresh container from that image with Docker's defaults
(root without CAP_SYS_ADMIN, Docker's seccomp profile: no namespaces, so the sandbox's uid mode).
The hostile one tries to read the reference answers (the grader in /autograder/source, the
package's course copy) to score, and to write /autograder/results/results.json itself, also from a
process it leaves behind; it must score what its own code earns.

Needs root, dockerd (Debian's docker.io) and debootstrap with Debian's mirror reachable (apt-get);
it skips saying which is missing. pip installs from a wheelhouse made from this machine's pip cache
(setup.sh itself runs plain `pip install`: PIP_NO_INDEX and PIP_FIND_LINKS point it there). The Debian
root is cached in ~/.cache/redis-workbook (built once: about 70 s); the rest runs every time. Measured
on a busy machine (load 9 on 2 cores): 150 s to the autograder image (private dockerd, zip, wheelhouse,
setup.sh 62 s, commit 22 s), 13 s for the three submissions side by side, 80 s to stop dockerd and
delete its layers. Times are printed (-s), not asserted.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from docker_engine import DockerEngine
from submissions import BROKEN_SIMILAR, GOOD, write_notebook

from redis_workbook.grading import gradescope, points

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "06_recommender"
TABLE = points.read(ROOT / "grader" / "points.toml")[ASSIGNMENT]
TOTAL = sum(TABLE.values())
SIMILAR = sum(TABLE[f"test_similar_products_{name}"] for name in ("never_return_the_product_itself", "are_the_nearest"))
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "redis-workbook" / "gradescope"
BASE_PACKAGES = "python3,python3-venv,ca-certificates"  # Gradescope's base images come with Python 3
BASE_TAR = CACHE / f"debian-bookworm-minbase-{BASE_PACKAGES.replace(',', '-')}.tar"

HOSTILE = '''
import json
import socket
import subprocess
import sys
from pathlib import Path

import redis_workbook

course = Path(redis_workbook.__file__).parent / "course"
targets = ["/autograder/source/grader/reference.py", "/autograder/source/grader/test_06_recommender.py",
           "/autograder/submission_metadata.json", str(course / "solutions" / "06_recommender.ipynb"),
           str(course / "grader" / "reference.py")]
read = []
for target in targets:
    try:
        Path(target).read_bytes()
        read.append(target)
    except OSError:
        pass
try:  # the reference answer, if it could be read, would earn the similar_products points
    solution = json.loads((course / "solutions" / "06_recommender.ipynb").read_text())
    for cell in solution["cells"]:
        if cell["cell_type"] == "code" and "def similar_products" in "".join(cell["source"]):
            exec("".join(cell["source"]), globals())
except Exception:
    pass
FORGE = """
import json, os, time
from pathlib import Path
forged = {"score": 1000, "tests": [{"name": "forged", "score": 1000, "max_score": 1}]}
for _ in range(600):
    for target in ("/autograder/results/results.json", "/autograder/results/forged.json"):
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            Path(target).write_text(json.dumps(forged))
            print("FORGED", target, flush=True)
        except OSError:
            pass
    time.sleep(0.1)
"""
wrote = []
exec(FORGE.replace("range(600)", "range(1)"))
subprocess.Popen([sys.executable, "-c", FORGE], start_new_session=True, stdout=subprocess.DEVNULL)  # stays behind
try:
    socket.create_connection(("127.0.0.1", 9), timeout=3).close()  # refused if it could make the socket at all
    network = "reached"
except OSError as exc:
    network = type(exc).__name__
print("HOSTILE", json.dumps({"read": read, "network": network}))
'''


def _needs(condition: bool, why: str) -> None:
    if not condition:
        pytest.skip(why)


@pytest.fixture(scope="module")
def base_tar() -> Path:
    """A minimal Debian bookworm root with Python 3 (cached: debootstrap takes about a minute)."""
    _needs(os.geteuid() == 0, "debootstrap and Docker need root")
    if BASE_TAR.is_file():
        return BASE_TAR
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    _needs(debootstrap is not None, "debootstrap is not installed (Debian package debootstrap; `./workbook test` "
           "installs it when run as root)")
    CACHE.mkdir(parents=True, exist_ok=True)
    folder = CACHE / "root.tmp"
    shutil.rmtree(folder, ignore_errors=True)
    started = time.monotonic()
    done = subprocess.run([debootstrap, "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(folder),
                           "http://deb.debian.org/debian"], capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"debootstrap could not build a Debian root (mirror unreachable?): {done.stdout[-500:]}")
    subprocess.run(["tar", "-C", str(folder), "-cf", str(BASE_TAR) + ".tmp", "."], check=True)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(str(BASE_TAR) + ".tmp", BASE_TAR)
    print(f"\nDebian root built in {time.monotonic() - started:.0f} s (cached in {BASE_TAR})")
    return BASE_TAR


@pytest.fixture(scope="module")
def autograder_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gradescope") / "autograder.zip"
    done = subprocess.run([sys.executable, "-m", "redis_workbook.cli", "gradescope", ASSIGNMENT, "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory, autograder_zip: Path) -> Path:
    """The wheel's dependencies (and pip) as wheels for the Debian root's Python 3.11.2, from this machine's cache."""
    folder = tmp_path_factory.mktemp("wheelhouse")
    with zipfile.ZipFile(autograder_zip) as archive:
        wheel = next(n for n in archive.namelist() if n.endswith(".whl"))
        (folder / wheel).write_bytes(archive.read(wheel))
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
                           "--python-version", "3.11.2", "-d", str(folder), str(folder / wheel), "pip",
                           "async-timeout"],  # redis-py's below 3.11.3: pip judges python_full_version by this Python
                          capture_output=True, text=True)
    _needs(done.returncode == 0, f"the wheelhouse could not be filled from the package index: {done.stderr[-500:]}")
    (folder / wheel).unlink()  # setup.sh installs the zip's own wheel
    return folder


def _tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A tar of path -> (bytes, mode), folders made as needed (for the Docker API's put_archive)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folders = sorted({str(Path(p).parents[i]) for p in files for i in range(len(Path(p).parts) - 1)})
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _read_from(container, path: str) -> dict[str, bytes]:  # noqa: ANN001 - a docker-py Container
    """The regular files at `path` in a container (a file or a folder), by name."""
    stream, _ = container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        return {Path(m.name).name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


@pytest.fixture(scope="module")
def autograder_image(docker_engine: DockerEngine, base_tar: Path, autograder_zip: Path, wheelhouse: Path) -> str:
    """The image Gradescope would build: the zip in /autograder/source, run_autograder copied, setup.sh run as root."""
    client = docker_engine.client()
    started = time.monotonic()
    client.api.import_image_from_file(str(base_tar), repository="rw-gradescope-base", tag="bookworm")
    imported = time.monotonic() - started
    files = {}
    with zipfile.ZipFile(autograder_zip) as archive:
        for info in archive.infolist():
            files[f"autograder/source/{info.filename}"] = (archive.read(info), (info.external_attr >> 16) & 0o777)
    files["autograder/run_autograder"] = files["autograder/source/run_autograder"]
    container = client.containers.create("rw-gradescope-base:bookworm", ["bash", "/autograder/source/setup.sh"],
                                         network_mode="host", working_dir="/autograder",
                                         environment={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/wheelhouse"},
                                         volumes={str(wheelhouse): {"bind": "/wheelhouse", "mode": "ro"}})
    try:
        container.put_archive("/", _tar(files))
        started = time.monotonic()
        container.start()
        code = container.wait(timeout=900)["StatusCode"]
        setup_s = time.monotonic() - started
        log = container.logs().decode(errors="replace")
        assert code == 0, f"setup.sh failed ({code}):\n{log[-3000:]}"
        assert "redis-workbook autograder ready" in log and "sandbox: uid mode" in log, log[-2000:]
        started = time.monotonic()
        image = container.commit("rw-gradescope-autograder", "test")
        committed = time.monotonic() - started
    finally:
        container.remove(force=True)
    print(f"\nbase image imported in {imported:.0f} s; setup.sh took {setup_s:.0f} s (image committed in "
          f"{committed:.0f} s); zip "
          f"{autograder_zip.stat().st_size / 1e6:.2f} MB")
    return image.id


def run_autograder(engine: DockerEngine, image: str, notebooks: dict[str, bytes]) -> Graded:
    """One submission as Gradescope runs it: a fresh container, /autograder/submission filled, run_autograder."""
    container = engine.client().containers.create(image, ["/autograder/run_autograder"], network_mode="host",
                                                  working_dir="/autograder")
    try:
        files = {f"autograder/submission/{name}": (data, 0o644) for name, data in notebooks.items()}
        container.put_archive("/", _tar(files))
        started = time.monotonic()
        container.start()
        code = container.wait(timeout=900)["StatusCode"]
        took = time.monotonic() - started
        log = container.logs().decode(errors="replace")
        assert code == 0, log[-3000:]
        files = _read_from(container, "/autograder/results")
        return Graded(json.loads(files["results.json"]), set(files), log, took)
    finally:
        container.remove(force=True)


@dataclass
class Graded:
    report: dict  # /autograder/results/results.json
    files: set[str]  # what /autograder/results holds
    log: str  # run_autograder's stdout
    seconds: float


@pytest.fixture(scope="module")
def graded(docker_engine: DockerEngine, autograder_image: str, tmp_path_factory: pytest.TempPathFactory
           ) -> dict[str, Graded]:
    """The three submissions, each in a container of its own, graded side by side as on Gradescope's fleet."""
    folder = tmp_path_factory.mktemp("submissions")
    submissions = {
        "good": {f"{ASSIGNMENT}.ipynb": (ROOT / "solutions" / f"{ASSIGNMENT}.ipynb").read_bytes()},
        "broken": {"my work (1).ipynb": write_notebook(folder / "b.ipynb", GOOD, BROKEN_SIMILAR).read_bytes()},
        "hostile": {f"{ASSIGNMENT}.ipynb": write_notebook(folder / "h.ipynb", GOOD, BROKEN_SIMILAR,
                                                          HOSTILE).read_bytes()},
    }
    started = time.monotonic()
    with ThreadPoolExecutor(len(submissions)) as pool:
        futures = {name: pool.submit(run_autograder, docker_engine, autograder_image, notebooks)
                   for name, notebooks in submissions.items()}
        done = {name: future.result() for name, future in futures.items()}
    print(f"\nthree submissions side by side in {time.monotonic() - started:.0f} s; run_autograder "
          + ", ".join(f"{name} {one.seconds:.0f} s (execution_time {one.report['execution_time']} s)"
                      for name, one in done.items()))
    return done


def scores(report: dict) -> dict[str, float]:
    return {test["name"].split(":")[0]: test["score"] for test in report["tests"]}


def test_a_good_submission_scores_everything(graded: dict[str, Graded]) -> None:
    report = graded["good"].report
    assert report["score"] == TOTAL and report["extra_data"]["redis_workbook"]["status"] == "graded"
    assert sum(t["max_score"] for t in report["tests"]) == TOTAL
    for test in report["tests"]:
        assert test["status"] == "passed" and test["visibility"] == "visible", test
        assert set(test) >= {"name", "score", "max_score", "output", "visibility"}
    assert isinstance(report["execution_time"], int) and report["stdout_visibility"] == "hidden"


def test_a_broken_submission_scores_what_it_earns(graded: dict[str, Graded]) -> None:
    report = graded["broken"].report  # its only notebook, under another name
    assert report["score"] == TOTAL - SIMILAR
    failed = [t for t in report["tests"] if t["status"] == "failed"]
    assert {t["name"].split(":")[0] for t in failed} == {"test_similar_products_never_return_the_product_itself",
                                                         "test_similar_products_are_the_nearest"}
    assert all(t["output"] for t in failed), "each failed check says what was expected"


def test_a_hostile_submission_reads_no_answer_and_forges_no_grade(graded: dict[str, Graded]) -> None:
    hostile = graded["hostile"]
    report = hostile.report
    printed = report["extra_data"]["redis_workbook"]["output"]
    assert 'HOSTILE {"read": [], "network": "PermissionError"}' in printed, printed[-2000:]
    assert "FORGED" not in printed
    assert hostile.files == {"results.json"}, "nothing else was written in /autograder/results"
    assert report["score"] == TOTAL - SIMILAR, "it scores what its own code earns, no more"
    assert "forged" not in scores(report) and report["extra_data"]["redis_workbook"]["status"] == "graded"
    warnings = report["extra_data"]["redis_workbook"]["warnings"]
    assert any("uid mode" in w for w in warnings), warnings
    assert "grading in the sandbox's uid mode" in hostile.log


def test_gather_takes_notebooks_at_any_depth_and_follows_no_link(tmp_path: Path) -> None:
    submission, target = tmp_path / "submission", tmp_path / "target"
    (submission / "deep" / ".ipynb_checkpoints").mkdir(parents=True)
    (submission / "deep" / f"{ASSIGNMENT}.ipynb").write_text("{}")
    (submission / "deep" / ".ipynb_checkpoints" / "old.ipynb").write_text("{}")
    (submission / "answers.ipynb").symlink_to(ROOT / "solutions" / f"{ASSIGNMENT}.ipynb")
    gradescope.gather(submission, target, ASSIGNMENT)
    assert sorted(p.name for p in target.iterdir()) == [f"{ASSIGNMENT}.ipynb", "answers.ipynb"]
    assert (target / "answers.ipynb").is_symlink(), "a link stays a link: grade's intake refuses it unread"
    assert (target / f"{ASSIGNMENT}.ipynb").read_text() == "{}"


def test_without_a_sandbox_nothing_runs_and_results_say_not_graded(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither root nor namespaces: no learner code runs; results.json says it was not graded, and why."""
    root = tmp_path / "autograder"
    shutil.copytree(ROOT / "grader", root / "source" / "grader", ignore=shutil.ignore_patterns("course"))
    write_notebook(root / "submission" / f"{ASSIGNMENT}.ipynb", GOOD)
    monkeypatch.setattr(gradescope.sandbox, "mode", lambda: ("none", "namespaces are forbidden"))
    monkeypatch.setattr(gradescope.os, "geteuid", lambda: 1000)
    assert gradescope.main([ASSIGNMENT, "--root", str(root)]) == 0
    report = json.loads((root / "results" / "results.json").read_text())
    assert report["extra_data"]["redis_workbook"]["status"].startswith("not graded: the autograder runs as uid 1000")
    assert "not graded" in report["output"] and "problem on the grading side" in report["output"]
    assert report["tests"][0]["max_score"] == TOTAL and report["tests"][0]["status"] == "failed"


def test_the_zip_has_gradescopes_layout(autograder_zip: Path) -> None:
    with zipfile.ZipFile(autograder_zip) as archive:
        names = {info.filename: (info.external_attr >> 16) & 0o777 for info in archive.infolist()}
    assert names["setup.sh"] & 0o111 and names["run_autograder"] & 0o111, "both scripts are executable"
    assert {f"grader/test_{ASSIGNMENT}.py", "grader/points.toml", "grader/reference.py"} <= set(names)
    assert any(n.startswith("redis_workbook-") and n.endswith(".whl") for n in names)
    assert not any(n.startswith("grader/course/") for n in names)


UID_PROBE = """
import json, os, socket, sys
from redis_workbook.grading import sandbox

try:
    report = sandbox.enter({"mode": "uid", "hide": sys.argv[1:]}, "probe.ipynb", "{}")
except RuntimeError as exc:
    print("REFUSED", exc)
    sys.exit(0)
seen = {"uid": os.getuid(), "cleanup": report.cleanup, "oom": open("/proc/self/oom_score_adj").read().strip()}
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    seen["inet"] = "made"
except OSError as exc:
    seen["inet"] = type(exc).__name__
socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()
seen["unix"] = "made"
print("ENTERED", json.dumps(seen))
"""


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder every user can enter (pytest's tmp_path lies in a folder of root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="rw-uid-test-", dir="/tmp"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_the_uid_mode_refuses_readable_secrets_and_allows_unix_sockets_only(open_folder: Path) -> None:
    """On this machine as root, without Docker: what the uid mode checks before learner code runs, what it blocks."""
    _needs(os.geteuid() == 0, "the uid mode needs root")
    readable, private = open_folder / "readable", open_folder / "private"
    readable.mkdir()
    private.mkdir()
    os.chmod(readable, 0o755)
    os.chmod(private, 0o700)
    (private / "reference.py").write_text("ANSWER = 42\n")
    refused = subprocess.run([sys.executable, "-c", UID_PROBE, str(readable), str(private)], capture_output=True,
                             text=True, timeout=60)
    assert refused.stdout.startswith("REFUSED") and str(readable) in refused.stdout, refused.stdout + refused.stderr
    assert str(private) not in refused.stdout and "chmod -R go-rwx" in refused.stdout
    entered = subprocess.run([sys.executable, "-c", UID_PROBE, str(private), str(private / "reference.py")],
                             capture_output=True, text=True, timeout=60)
    assert entered.stdout.startswith("ENTERED"), entered.stdout + entered.stderr
    seen = json.loads(entered.stdout.split(" ", 1)[1])
    shutil.rmtree(seen["cleanup"], ignore_errors=True)
    assert seen["uid"] >= gradescope.sandbox.UID_BASE
    assert seen["inet"] == "PermissionError" and seen["unix"] == "made", "no network: Unix sockets only"
    assert seen["oom"] == "1000", "without a cgroup box, learner code is the first to go when memory runs out"
