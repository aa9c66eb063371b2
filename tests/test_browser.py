"""A learner's first minutes, in a real browser: `redis-workbook lab`, open 01_setup, Run All, see Redis answer.

nbclient already proves the notebooks run; this proves the path a learner takes works end to end: the lab
command starts Redis and JupyterLab, the kernel finds Redis through REDIS_URL, and the ping result shows on the
page. Debian's Chromium (/usr/bin/chromium) is driven by Playwright; Playwright's own browsers are never
downloaded. The screenshot is kept in artifacts/browser/ so a person can see what the browser saw.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from processes import descendants, wait_gone

from redis_workbook.server import free_port

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import Locator, Page, expect, sync_playwright
except ImportError:  # the `test` extra is missing; the test says so instead of breaking collection
    sync_playwright = None

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NOTEBOOK = "01_setup.ipynb"
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium on a machine without network or GPU: no sandbox as root, no background
# connections (each one is refused here and slows start-up), no first-run or sync prompts.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
START_TIMEOUT = 60  # seconds for Redis + JupyterLab to answer; a cold start here takes about 5
UI_TIMEOUT = 60_000  # milliseconds for any one step in the page; a normal run needs a few seconds

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's Chromium at /usr/bin/chromium (`apt-get install chromium`; ./workbook test does it as root)",
)


@dataclass
class Lab:
    process: subprocess.Popen[bytes]
    url: str  # http://localhost:PORT/
    token: str
    log: Path


def private_env(home: Path, token: str) -> dict[str, str]:
    """The caller's environment minus anything that would point Jupyter or the kernel at user state."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DISPLAY", "WAYLAND_DISPLAY", "JUPYTER_PATH", "JUPYTER_CONFIG_PATH")}
    dirs = {"JUPYTER_CONFIG_DIR": "config", "JUPYTER_DATA_DIR": "data", "JUPYTER_RUNTIME_DIR": "runtime",
            "JUPYTERLAB_SETTINGS_DIR": "settings", "JUPYTERLAB_WORKSPACES_DIR": "workspaces", "IPYTHONDIR": "ipython"}
    for name, sub in dirs.items():
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[name] = str(home / sub)
    env["JUPYTER_TOKEN"] = token
    # No "get Jupyter news?" toast over the notebook, and no request to the internet for it.
    notification = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    return env


def wait_for_server(lab: Lab, runtime: Path) -> str:
    """The server's URL from its runtime file (the port may differ from ours after port retries), once /api answers."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if lab.process.poll() is not None:
            break
        for info_file in runtime.glob("jpserver-*.json"):
            try:
                url = json.loads(info_file.read_text())["url"]
                with urllib.request.urlopen(f"{url}api/status?token={lab.token}", timeout=5) as answer:
                    json.load(answer)
                return url
            except (OSError, ValueError, KeyError):
                pass  # file half written or server not listening yet
        time.sleep(0.2)
    raise AssertionError(f"JupyterLab did not answer within {START_TIMEOUT} s; its output:\n{lab.log.read_text()}")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """`redis-workbook lab --no-browser` on a copy of notebooks/, with private Jupyter dirs; Ctrl-C at the end."""
    if not (NOTEBOOKS / NOTEBOOK).exists():
        pytest.fail(f"{NOTEBOOKS / NOTEBOOK} is missing; `redis-workbook release` generates it from solutions/")
    work = tmp_path / "work"
    shutil.copytree(NOTEBOOKS, work / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    token = secrets.token_hex(16)
    env = private_env(tmp_path / "jupyter", token)
    log = tmp_path / "lab.log"
    command = [sys.executable, "-m", "redis_workbook.cli", "lab", "--no-browser", "--port", str(free_port()),
               "--notebooks", "notebooks"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = Lab(process, "", token, log)
    try:
        server.url = wait_for_server(server, Path(env["JUPYTER_RUNTIME_DIR"]))
        yield server
    finally:
        stop(server)


def stop(lab: Lab) -> None:
    """Ctrl-C, as a learner would; then check that JupyterLab, its kernels and Redis all exited."""
    started = descendants(lab.process.pid)
    lab.process.send_signal(signal.SIGINT)
    try:
        code: int | None = lab.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        code = None
        for pid in started | {lab.process.pid}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        lab.process.wait()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(lab.log, ARTIFACTS / "lab.log")  # what JupyterLab and the kernel logged, next to the screenshot
    assert code is not None, f"`redis-workbook lab` ignored Ctrl-C for 60 s; its output:\n{lab.log.read_text()}"
    left = wait_gone(started)
    assert not left, f"still running after Ctrl-C: {left}"
    assert code == 0, f"`redis-workbook lab` exited with {code} on Ctrl-C; its output:\n{lab.log.read_text()}"


def kernel_idle(page: Page) -> Locator:
    """The status bar's kernel item once a real kernel reports Idle (it says "No Kernel | Initializing" at first,
    while the toolbar's execution indicator already says idle)."""
    return page.locator("#jp-main-statusbar").get_by_role("button", name=re.compile(r"^(?!No Kernel).+ \| Idle$"))


def run_all_cells(page: Page) -> None:
    """Run > Run All Cells from the menu bar, once the kernel is connected and idle."""
    expect(kernel_idle(page)).to_be_visible(timeout=UI_TIMEOUT)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def wait_until_done(page: Page) -> None:
    """No cell queued or running ([*]) and the kernel idle: Run All finished (stopping at the first exception)."""
    expect(page.locator(".jp-InputPrompt", has_text="[*]")).to_have_count(0, timeout=UI_TIMEOUT)
    expect(kernel_idle(page)).to_be_visible(timeout=UI_TIMEOUT)


def open_and_run(page: Page, lab: Lab) -> Locator:
    """Open the notebook with the token URL, Run All, and wait for the ping cell's output; returns that cell."""
    page.goto(f"{lab.url}lab/tree/{NOTEBOOK}?token={lab.token}")
    run_all_cells(page)
    # The cell that calls r.ping(): its output must end in True (printed or shown as the cell's value).
    ping_cell = page.locator(".jp-CodeCell").filter(
        has=page.locator(".jp-InputArea", has_text=re.compile(r"\.ping\(\)"))).first
    expect(ping_cell.locator(".jp-OutputArea-output").last).to_have_text(re.compile(r"(^|\s)True\s*$"),
                                                                    timeout=UI_TIMEOUT)
    wait_until_done(page)
    return ping_cell


def test_lab_runs_01_setup_in_chromium_and_shows_redis_ping(lab: Lab) -> None:
    if sync_playwright is None:
        pytest.fail("Playwright is not installed: pip install -e '.[test]' (./workbook test does it)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / NOTEBOOK.replace(".ipynb", ".png")
    shot.unlink(missing_ok=True)
    before = descendants(os.getpid()) | descendants(lab.process.pid)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT)
        try:
            ping_cell = open_and_run(page, lab)
            ping_cell.evaluate("cell => cell.scrollIntoView({block: 'center'})")
        finally:
            # Playwright's driver and Chromium; the lab's own processes (kernel too) are checked when it stops.
            browser_pids = descendants(os.getpid()) - before - descendants(lab.process.pid)
            with contextlib.suppress(PlaywrightError):  # never hide the real failure behind a screenshot error
                page.screenshot(path=shot)  # also on failure: it shows what the browser saw
            browser.close()
    left = wait_gone(browser_pids)
    assert not left, f"Playwright/Chromium processes still running: {left}"
    assert shot.stat().st_size > 10_000, f"{shot} looks empty"
