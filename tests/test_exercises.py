"""redis_workbook.exercises in a real IPython shell: messages for stubs, no follow-on tracebacks, checks untouched."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from IPython.core.interactiveshell import InteractiveShell

from redis_workbook.exercises import NAMESPACE_NAME, Tracker, install

STUB = '''
def knn_search(r, k=5):
    """The k nearest."""
    # YOUR CODE HERE
    raise NotImplementedError()
'''


@pytest.fixture
def shell() -> Iterator[InteractiveShell]:
    shell = InteractiveShell.instance()
    tracker = Tracker()
    shell.user_ns[NAMESPACE_NAME] = tracker
    shell.ast_transformers.append(tracker)
    yield shell
    shell.ast_transformers.remove(tracker)
    InteractiveShell.clear_instance()


def run(shell: InteractiveShell, code: str, capsys: pytest.CaptureFixture[str]) -> tuple[object, str]:
    result = shell.run_cell(code)
    return result, capsys.readouterr().out


def test_a_stub_says_what_to_write_and_its_demos_wait(shell: InteractiveShell,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    result, out = run(shell, STUB, capsys)
    assert result.success and out.count("✎ `knn_search`: not written yet") == 1
    result, out = run(shell, "hits = knn_search(None)\nprint(hits)", capsys)
    assert result.success and "⏸ Finish `knn_search` above to see this." in out and "Traceback" not in out
    result, out = run(shell, "print(len(hits))", capsys)  # hits was never set: it waits for knn_search too
    assert result.success and "⏸ Finish `knn_search` above to see this." in out


def test_a_cell_after_a_waiting_demo_quotes_the_error(shell: InteractiveShell,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    run(shell, STUB, capsys)
    run(shell, "knn_search(None)", capsys)
    result, out = run(shell, "{}['embedding']", capsys)
    assert result.success and "Finish `knn_search` above to see this (this cell stopped at KeyError" in out


def test_written_functions_run_untouched(shell: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    run(shell, STUB, capsys)
    run(shell, "hits = knn_search(None)", capsys)
    result, out = run(shell, "def knn_search(r, k=5):\n    return [('1', 0.0)][:k]\n", capsys)
    assert result.success and "✎" not in out
    result, out = run(shell, "hits = knn_search(None)\nhits", capsys)
    assert result.success and result.result == [("1", 0.0)] and "⏸" not in out
    result, _ = run(shell, "1 / 0", capsys)  # an error of the learner's own shows as usual
    assert not result.success and isinstance(result.error_in_exec, ZeroDivisionError)


def test_the_check_cells_fail_as_they_are(shell: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    """nbgrader scores `require` cells by their errors: they must never be turned into a message."""
    run(shell, STUB, capsys)
    run(shell, "knn_search(None)", capsys)
    result, out = run(shell, "def require(*args):\n    raise AssertionError('not written yet')\n\n"
                             "require('03_knn', 'test_x', globals())", capsys)
    assert not result.success and isinstance(result.error_in_exec, AssertionError) and "⏸" not in out
    result, _ = run(shell, "require('03_knn', 'test_y', globals())", capsys)
    assert not result.success


def test_a_class_with_stub_methods_is_announced_once(shell: InteractiveShell,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    result, out = run(shell, "class Cache:\n    def get(self):\n        raise NotImplementedError()\n\n"
                             "    def put(self):\n        raise NotImplementedError\n", capsys)
    assert result.success and out.count("✎") == 1 and "`Cache` (`get`, `put`)" in out


def test_install_only_in_a_jupyter_kernel() -> None:
    assert install(InteractiveShell.instance()) is False  # a terminal IPython or the grader's worker shell
    InteractiveShell.clear_instance()
