"""The grading pytest plugin: fixtures `nb`, `r`, `redis_url`, and a per-test outcome with points.

Registered by grader/conftest.py (`pytest_plugins`) or `-p redis_workbook.grading.plugin`.

Remote mode (`--submission NOTEBOOK.ipynb`): the notebook runs in a sandboxed worker
(remote.Notebook); its cells' own `connect()` reaches a Redis of their own, and the
clients the tests pass in reach the Redis under test, both as a restricted user;
`nb` proxies calls into it. Local mode (check.self_check/require): a `LocalRun` plugin
object carries the notebook's globals() and a private Redis URL; `nb` wraps the dict.

Either way: one Redis per pytest session (`--backend embedded|testcontainers|url`),
FLUSHALL before every test with the admin client, and `--results-json PATH`
records each test's outcome and points (results.Results, as JSON).
A Redis that stops answering marks the run an infrastructure failure and stops it.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from redis_workbook.grading import backends, options, points, remote, sandbox, submission, timings, workerprocess
from redis_workbook.grading.enclosure import Enclosure, SandboxUnavailable
from redis_workbook.grading.options import ADMIN_URL_ENV, PARENT_ENV
from redis_workbook.grading.results import Check, NotebookRun, Results, write_json_atomic

MESSAGE_LIMIT = 4000
ADMIN_TIMEOUT_S = 30  # the grader's own commands: a Redis kept busy by learner code must not hang the checks
KEY = pytest.StashKey["Grading"]()


@dataclass(eq=False)  # plugins must be hashable
class LocalRun:
    """Passed to pytest.main(plugins=[...]) by self_check/require: the namespace and a Redis to use."""

    namespace: dict
    redis_url: str


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("redis-workbook", "grading a learner's notebook")
    group.addoption("--submission", metavar="NOTEBOOK", help="the learner's .ipynb to grade (runs sandboxed)")
    group.addoption("--results-json", metavar="PATH", help="write each test's outcome and points here")
    options.add(group, "backend", "redis_url", "cell_timeout", "notebook_timeout", "call_timeout", "memory_mb",
                "submission_timeout", "hide")
    group.addoption("--sandbox", choices=sandbox.MODES,
                    help="root, user (namespaces as an ordinary user) or none; default: the strongest possible")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[KEY] = Grading(config)
    config.pluginmanager.register(config.stash[KEY], "redis-workbook-grading")  # its own hooks (collection)
    config.stash[KEY].timeline.mark("process and pytest start-up")  # a fork of grade's fork server, or a new Python
    if parent := os.environ.get(PARENT_ENV):
        from redis_workbook.server import die_with_parent

        die_with_parent(signal.SIGTERM)
        if str(os.getppid()) != parent:
            raise SystemExit(3)
    if config.getoption("submission") and hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, config.stash[KEY].interrupt)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    config.stash[KEY].score_items(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    report = yield
    if report.failed or report.skipped:
        grading = item.config.stash[KEY]
        message = failure_message(call.excinfo) if call.excinfo is not None else "failed"
        if call.when == "teardown":
            message = "error after the test: " + message
        report.workbook_message = message  # type: ignore[attr-defined]
        if report.failed:
            grading.check_infrastructure(item.session)
    item.config.stash[KEY].record(report)
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[KEY].finish()


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def _workbook(request: pytest.FixtureRequest) -> Grading:
    return request.config.stash[KEY]


@pytest.fixture(autouse=True)
def _workbook_fresh_redis(_workbook: Grading) -> None:
    """Before every test: the notebook is running (its cells have run) and the database is empty."""
    _workbook.before_test()


@pytest.fixture
def nb(_workbook: Grading) -> Any:
    """The learner's namespace: `nb.knn_search(r, q)` calls their function (in the sandbox when grading)."""
    return _workbook.namespace


@pytest.fixture
def r(_workbook: Grading) -> Iterator[redis.Redis]:
    """A trusted, binary-safe admin client on the (emptied) Redis under test."""
    client = _workbook.redis_under_test().admin(socket_timeout=ADMIN_TIMEOUT_S)
    yield client
    client.close()


@pytest.fixture
def redis_url(_workbook: Grading) -> str:
    """The admin URL of the Redis under test, for a second client (e.g. decode_responses=True)."""
    return _workbook.redis_under_test().admin_url


@pytest.fixture
def learner_hash(_workbook: Grading) -> Any:
    """Python's hash() as the learner's code computes it, to recognise `cache:{hash(query)}` keys."""
    return hash if _workbook.local is not None else workerprocess.learner_hash


# ---------------------------------------------------------------------------------------------- session
class Grading:
    """One pytest session's grading state: Redis, the notebook, each test's outcome."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.local = next((p for p in config.pluginmanager.get_plugins() if isinstance(p, LocalRun)), None)
        self.started = time.monotonic()
        self.redis: backends.RedisUnderTest | None = None
        self.notebook_redis: backends.RedisUnderTest | None = None
        self.notebook: remote.Notebook | None = None
        self.enclosure: Enclosure | None = None
        self._namespace: Any = None
        self.submission: submission.Submission | None = None
        self.assignment: str | None = None
        self.known: tuple[str, ...] = ()
        self.outcomes: dict[str, Check] = {}
        self.infrastructure: str | None = None
        self.broken_by_learner: str | None = None
        self.warnings: list[str] = []
        self.timeline = timings.Timeline()  # where the time goes (bench --grading), when asked for

    # ------------------------------------------------------------------ collection
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """A grader's test module that cannot be collected: a warning (`grade` stops on it before grading)."""
        if report.failed:
            self.warnings.append(f"{report.nodeid}: {str(report.longrepr)[-1500:]}")

    def score_items(self, items: list[pytest.Item]) -> None:
        """Points per collected test from the nearest points.toml; parametrized cases share their test's points."""
        tables: dict[Path, dict[str, dict[str, float]]] = {}
        functions = Counter((item.path, _function_name(item)) for item in items)
        assignments = set()
        for item in items:
            file = points.points_file_for(item.path)
            table_set = tables.setdefault(file, points.read(file)) if file else {}
            self.known = tuple(sorted(set(self.known) | set(table_set)))
            assignment = points.assignment_of_module(item.path.stem, tuple(table_set))
            assignments.add(assignment)
            name = _function_name(item)
            worth = table_set.get(assignment or "", {}).get(name)
            if worth is None:
                self.warnings.append(f"{item.nodeid} has no points in {file or points.POINTS_FILE}")
                worth = 0.0
            function = getattr(item, "function", None)
            doc = (function.__doc__ or "").strip().split("\n")[0] if function is not None else ""
            self.outcomes[item.nodeid] = Check(item.nodeid, item.name, doc, assignment,
                                               max_points=worth / functions[(item.path, name)])
        if len(assignments) == 1:
            self.assignment = assignments.pop()

    def record(self, report: pytest.TestReport) -> None:
        outcome = self.outcomes.get(report.nodeid)
        if outcome is None:
            return
        if report.when == "call" and report.passed and outcome.message == "not run":
            outcome.passed, outcome.points, outcome.message = True, outcome.max_points, ""
        elif report.failed or report.skipped:
            message = getattr(report, "workbook_message", "failed")
            if report.skipped:
                message = "skipped: " + message
            if outcome.passed or outcome.message in ("not run", ""):
                outcome.passed, outcome.points, outcome.message = False, 0.0, message[:MESSAGE_LIMIT]

    # ------------------------------------------------------------------ per test
    def redis_under_test(self) -> backends.RedisUnderTest:
        if self.redis is None:
            if self.local is not None:
                url = self.local.redis_url
                self.redis = backends.RedisUnderTest("local", url, url, backends.address_of(url), lambda: None)
            else:
                option = self.config.getoption
                url = option("redis_url") or os.environ.get(ADMIN_URL_ENV)
                try:
                    self.redis = backends.start(option("backend"), url, maxmemory_mb=sandbox.Limits().redis_mb)
                except Exception as exc:
                    self.infrastructure = f"the Redis under test could not be started: {exc}"
                    raise
                self.timeline.mark("redis under test")
                self.warnings += self.redis.warnings
        return self.redis

    @property
    def namespace(self) -> Any:
        """The learner's namespace; in remote mode set up by before_test (which runs first: autouse)."""
        if self._namespace is None and self.local is not None:
            self._namespace = remote.LocalNamespace(self.local.namespace)
        return self._namespace

    def before_test(self) -> None:
        if self.stopped:
            pytest.fail(f"not run: {self.stopped}", pytrace=False)
        if self.local is None:
            if not self.config.getoption("submission"):
                pytest.fail("The grader's tests need a notebook: run them with --submission NOTEBOOK.ipynb, "
                            "`redis-workbook check NOTEBOOK` or self_check() in the notebook.", pytrace=False)
            self._prepare_notebook()
        client = self.redis_under_test().admin(socket_timeout=ADMIN_TIMEOUT_S)
        try:
            client.flushall()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self.redis_stopped(f"the Redis under test stopped answering ({exc})")
            pytest.fail(f"not run: {self.stopped}", pytrace=False)
        finally:
            client.close()

    def _prepare_notebook(self) -> None:
        if self.submission is None:
            self.timeline.mark("collection")
            path = Path(self.config.getoption("submission"))
            self.submission = submission.load(path, self.assignment, self.known)
        if self.submission.problem:
            pytest.fail(self.submission.problem, pytrace=False)
        under_test = self.redis_under_test()
        if self.notebook is None:
            option = self.config.getoption
            settings = workerprocess.Settings(
                cell_timeout=option("cell_timeout"), notebook_timeout=option("notebook_timeout"),
                call_timeout=option("call_timeout"), budget=option("submission_timeout"),
                sandbox_mode=option("sandbox"))
            settings.limits.memory_mb = option("memory_mb")
            try:
                self.enclosure = Enclosure(settings.limits, settings.sandbox_mode)
            except SandboxUnavailable as exc:
                self.infrastructure = str(exc)
                raise
            self.timeline.mark("enclosure")
            if under_test.pid is not None:  # reached by learner code through the gateway: it shares the box
                self._into_box(under_test.pid)
            notebook_url = self._notebook_redis(under_test, settings.limits, self.enclosure)
            self.timeline.mark("notebook redis")
            self.notebook = remote.Notebook(self.submission, under_test.learner_url, settings,
                                            hide=self._hidden_paths(), grading_address=under_test.address,
                                            notebook_redis_url=notebook_url, enclosure=self.enclosure)
            self._namespace = remote.RemoteNamespace(self.notebook)
        first = self.notebook.worker is None and not self.notebook.generation
        try:
            self.notebook.prepare_for_test()
        except workerprocess.InfrastructureError as exc:
            self.infrastructure = str(exc)
            raise
        if first:
            for what, at in self.notebook.startup:
                self.timeline.mark(what, at)
            self.timeline.mark("notebook cells")

    def _notebook_redis(self, under_test: backends.RedisUnderTest, limits: sandbox.Limits,
                        enclosure: Enclosure) -> str:
        """The notebook's own Redis (its cells' `connect()`), apart from the one the tests use.

        As in nbgrader and the self-check, where the tests run on a private server: a function
        that uses the notebook's global client instead of its `r` argument fails the same way.
        It listens on a Unix socket among the gateway's and lives in the submission's box.
        """
        try:
            self.notebook_redis = backends.start("embedded", maxmemory_mb=limits.redis_mb,
                                                 unix_socket=enclosure.sockets / "notebook.sock",
                                                 folder=enclosure.folder)
        except Exception as exc:  # noqa: BLE001 - e.g. no embedded server on this platform
            self.warnings.append(f"the notebook's cells share the Redis under test (no embedded server: {exc})")
            return under_test.learner_url
        if self.notebook_redis.pid is not None:
            self._into_box(self.notebook_redis.pid)
        return self.notebook_redis.learner_url

    def _into_box(self, pid: int) -> None:
        """A Redis of the submission joins its box: memory and CPU (its maxmemory and client limits keep it small
        there), but not the process count, which the learner's processes may use up."""
        assert self.enclosure is not None
        try:
            self.enclosure.box.add(pid, server=True)
        except OSError as exc:
            self.warnings.append(f"a Redis of the submission stays outside its box ({exc})")

    def _hidden_paths(self) -> list[str]:
        """The grader's own files: the test folders of this run, the repository's grader/solutions/.git."""
        here = self.config.invocation_params.dir
        paths = [str((here / p).resolve()) for p in self.config.getoption("hide")]
        tests = [(here / a.split("::")[0]).resolve() for a in self.config.args]
        paths += [str(t if t.is_dir() else t.parent) for t in tests if t.exists()]
        try:
            paths += [str(p) for p in points.secret_paths(points.grader_dir())]
        except points.GraderNotFound:
            pass
        return sorted({p for p in paths if Path(p).exists()})

    def check_infrastructure(self, session: pytest.Session) -> None:
        """After a failure: is Redis still there? If not, this run cannot grade anything more."""
        if self.redis is not None and not self.stopped and not self.redis.alive():
            self.redis_stopped("the Redis under test stopped answering")
        if self.stopped:
            session.shouldstop = f"grading stopped: {self.stopped}"

    @property
    def stopped(self) -> str | None:
        return self.infrastructure or self.broken_by_learner

    def redis_stopped(self, what: str) -> None:
        """Whose failure: the learner's when their code's commands had reached that Redis, else the grader's."""
        gateway = self.enclosure.gateway if self.enclosure is not None else None
        if self.redis is not None and gateway is not None and gateway.sent.get(self.redis.address, 0) > 0:
            self.broken_by_learner = (f"{what} after your code's commands reached it, so the checks after that "
                                      "could not run: look for commands that take the server down or keep it "
                                      "busy (huge pipelines, commands over millions of elements)")
        else:
            self.infrastructure = what

    # ------------------------------------------------------------------ end
    def interrupt(self, *_: object) -> None:
        """SIGTERM (grade's interrupt, or its fork server gone): the session ends, what ran is no grade."""
        self.infrastructure = self.infrastructure or "the grading process was stopped before it finished"
        raise KeyboardInterrupt  # pytest then finishes the session: the worker and Redis are stopped

    def finish(self) -> None:
        self.timeline.mark("checks")
        cpu = self._cpu() if self.timeline.path else {}
        if self.notebook is not None:
            self.notebook.close()
        for server in (self.redis, self.notebook_redis) if self.local is None else ():
            try:
                if server is not None:
                    server.stop()
            except Exception as exc:  # noqa: BLE001 - stopping must not hide the results
                self.warnings.append(f"stopping Redis: {exc}")
        if self.enclosure is not None:
            self.enclosure.close()
        self.timeline.mark("teardown")
        if self.config.getoption("submission"):
            self.timeline.write(cpu=cpu, assignment=self.assignment)
        if path := self.config.getoption("results_json"):
            write_json_atomic(Path(path), self.results().to_json())

    def _cpu(self) -> dict[str, float | None]:
        """CPU seconds so far of this process, the notebook's worker and the two Redis servers (for timings)."""
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        worker = self.notebook.worker if self.notebook is not None else None
        return {"grader": round(usage.ru_utime + usage.ru_stime, 3),
                "worker": worker.cpu() if worker is not None else None,
                "redis under test": timings.process_cpu(self.redis.pid if self.redis else None),
                "notebook redis": timings.process_cpu(self.notebook_redis.pid if self.notebook_redis else None)}

    def results(self) -> Results:
        tests = list(self.outcomes.values())
        notebook = self.notebook
        return Results(
            assignment=self.assignment,
            submission=self.config.getoption("submission"),
            tests=tests,
            score=sum(t.points for t in tests),
            max_score=sum(t.max_points for t in tests),
            submission_problem=self.submission.problem if self.submission else None,
            notebook=None if notebook is None else NotebookRun(
                problems=notebook.problems() + ([self.broken_by_learner] if self.broken_by_learner else []),
                output=notebook.output.text(), restarts=notebook.restarts, sandbox=notebook.sandbox_report,
            ),
            backend=self.redis.kind if self.redis else None,
            infrastructure_error=self.infrastructure,
            warnings=self.warnings,
            duration=round(time.monotonic() - self.started, 3),
        )


def _function_name(item: pytest.Item) -> str:
    return getattr(item, "originalname", None) or item.name.split("[")[0]


# ---------------------------------------------------------------------------------------------- messages
def failure_message(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    """What a learner should read: the test's own message, or the error and where in their code it happened."""
    exc = excinfo.value
    if isinstance(exc, (pytest.fail.Exception, pytest.skip.Exception)):
        return str(exc.msg)[:MESSAGE_LIMIT]
    if isinstance(exc, remote.MissingDefinition):
        return str(exc)[:MESSAGE_LIMIT]
    if isinstance(exc, AssertionError):
        text = str(exc)
        head, rewritten, _ = text.partition("\nassert ")
        return (head if head.strip() and rewritten else _cap_lines(text or "assertion failed", 25))[:MESSAGE_LIMIT]
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # noqa: BLE001
        text = type(exc).__name__
    trace = getattr(exc, "learner_traceback", None)
    if trace:
        text += "\nin your notebook:\n" + trace
    else:
        short = str(excinfo.getrepr(style="short", chain=False, truncate_locals=True))
        text += "\n" + _cap_lines(short, 20, keep="last")
    return text[:MESSAGE_LIMIT]


def _cap_lines(text: str, count: int, keep: str = "first") -> str:
    lines = text.splitlines()
    if len(lines) <= count:
        return text
    return "\n".join(lines[:count] + ["..."]) if keep == "first" else "\n".join(["...", *lines[-count:]])
