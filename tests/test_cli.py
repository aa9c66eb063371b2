"""The CLI's lab and server commands: they start what they promise and Ctrl-C leaves nothing behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from processes import descendants, running, wait_gone

from redis_workbook.server import free_port

ROOT = Path(__file__).resolve().parents[1]


def read_until(stream, pattern: str, timeout: float = 60, log: list[str] | None = None) -> re.Match[str]:  # noqa: ANN001
    deadline, seen = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen += line
        if log is not None:
            log.append(line)
        if match := re.search(pattern, line):
            return match
    raise AssertionError(f"no {pattern!r} in output:\n{seen}")


def api_status(port: int, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=5))
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_cli_without_command_prints_help() -> None:
    done = subprocess.run([sys.executable, "-m", "redis_workbook.cli"], capture_output=True, text=True)
    assert done.returncode == 2 and "lab" in done.stdout and "grade" in done.stdout


def test_server_prints_a_url_that_works_and_stops_on_ctrl_c() -> None:
    server = subprocess.Popen([sys.executable, "-m", "redis_workbook.cli", "server"],
                              stdout=subprocess.PIPE, text=True)
    url = read_until(server.stdout, r"export REDIS_URL='([^']+)'").group(1)
    client = redis.Redis.from_url(url)
    assert isinstance(client.execute_command("FT._LIST"), list)
    redis_pids = descendants(server.pid)
    server.send_signal(signal.SIGINT)
    assert server.wait(timeout=10) == 0
    assert redis_pids and not any(running(pid) for pid in redis_pids)


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what `redis-workbook lab &` in a script or nohup hands it


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_lab_serves_notebooks_with_redis_and_stops_everything(tmp_path: Path, stop_signal: int) -> None:
    fresh = stop_signal == signal.SIGINT  # then there is no notebooks/ yet: lab writes the learner notebooks
    if not fresh:
        (tmp_path / "notebooks").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DISPLAY")}
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")
    port = free_port()
    log: list[str] = []
    lab = subprocess.Popen([sys.executable, "-m", "redis_workbook.cli", "lab", "--port", str(port)],
                           cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           preexec_fn=ignore_sigint)  # Ctrl-C must work even when started with SIGINT ignored
    try:
        url = read_until(lab.stdout, r"export REDIS_URL='([^']+)'", log=log).group(1)
        assert isinstance(redis.Redis.from_url(url).execute_command("FT._LIST"), list)
        lab_url = read_until(lab.stdout, rf"JupyterLab is ready\. Open (http://127\.0\.0\.1:{port}/lab\?token=\w+)",
                             timeout=90, log=log).group(1)
        assert "version" in api_status(port)
        contents = lab_url.replace("/lab?", "/api/contents?")  # the printed URL alone lets the learner in
        assert json.load(urllib.request.urlopen(contents, timeout=10))["type"] == "directory"
        started = descendants(lab.pid)
        assert len(started) >= 2  # redis-server and jupyter-lab
    finally:
        lab.send_signal(stop_signal)
        code = lab.wait(timeout=60)
    assert code == 0
    assert not wait_gone(started)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url).ping()
    printed = "".join(log) + lab.stdout.read()
    if fresh:
        learner = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
        assert sorted(p.name for p in (tmp_path / "notebooks").iterdir()) == learner
        assert f"Wrote the {len(learner)} learner notebooks" in printed
    for misleading in ("No nbgrader_config.py", "Control-C", "twice to skip confirmation"):
        assert misleading not in printed, printed
