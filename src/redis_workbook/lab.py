"""`redis-workbook lab`: one Redis for every notebook, and JupyterLab on notebooks/.

The server starts first and its URL goes into JupyterLab's environment as
REDIS_URL, so all kernels share one Redis (data loaded in one notebook is there
in the next). Ctrl-C stops JupyterLab, its kernels and Redis; nothing stays behind.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from redis_workbook import coursefolder
from redis_workbook.connection import connect, redact
from redis_workbook.server import EmbeddedRedis, die_with_parent, stop_processes

NOTEBOOKS = "notebooks"
URL = re.compile(r"http://127\.0\.0\.1:(\d+)/lab\?token=(\w+)")
CONTROL_C = "Use Control-C to stop this server"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--notebooks", default=NOTEBOOKS,
                        help="folder to open (default: notebooks; when there is none here, the package's learner "
                             "notebooks are written into it first)")
    parser.add_argument("--port", type=int, default=8888, help="JupyterLab port (default: 8888)")
    parser.add_argument("--no-browser", action="store_true",
                        help="don't open a browser (the default when there is no display)")
    parser.add_argument("--url", action="store_true",
                        help="print the address of the JupyterLab already running on the folder (waiting for it up "
                             "to two minutes) and exit; what a Codespace shows when you attach")


def codespace() -> tuple[str, str] | None:
    """(name, port-forwarding domain) inside a GitHub Codespace, else None."""
    name = os.environ.get("CODESPACE_NAME")
    domain = os.environ.get("GITHUB_CODESPACES_PORT_FORWARDING_DOMAIN")
    return (name, domain) if os.environ.get("CODESPACES") == "true" and name and domain else None


def address(port: int, token: str) -> str:
    """Where a browser opens JupyterLab: the Codespace's forwarded address there, loopback elsewhere."""
    place = codespace()
    base = f"https://{place[0]}-{port}.{place[1]}" if place else f"http://127.0.0.1:{port}"
    return f"{base}/lab?token={token}"


def codespace_options() -> list[str]:
    """A Codespace's browser reaches JupyterLab through GitHub's port forwarding (https://NAME-PORT.DOMAIN, the
    forwarded port private to the Codespace's owner unless they make it public). JupyterLab still listens on
    loopback only and still wants its token; it accepts that origin, whatever port it moved to, and that host."""
    place = codespace()
    if place is None:
        return []
    origin = rf"https://{re.escape(place[0])}-\d+\.{re.escape(place[1])}$"
    return [f"--ServerApp.allow_origin_pat={origin}", "--ServerApp.allow_remote_access=True"]


def headless() -> bool:
    return sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or
                                                      os.environ.get("WAYLAND_DISPLAY"))


def relay(output: TextIO, port: int) -> None:
    """JupyterLab's log, without its own Ctrl-C advice (ours holds); its address, token included, said plainly."""
    announced = False
    for line in output:
        if CONTROL_C in line:
            continue
        sys.stdout.write(line)
        found = None if announced else URL.search(line)
        if found:
            announced = True
            moved = int(found.group(1))
            if moved != port:
                sys.stdout.write(f"Port {port} was busy, so JupyterLab is on port {moved}"
                                 f"{' (forward that port in the PORTS tab)' if codespace() else ''}.\n")
            sys.stdout.write(f"\nJupyterLab is ready. Open {address(moved, found.group(2))}\n"
                             "(Ctrl-C here stops JupyterLab and Redis.)\n\n")
        sys.stdout.flush()


def running(folder: Path, wait_s: float = 120) -> str | None:
    """The address of a JupyterLab of this user serving `folder`, waiting up to `wait_s` for one to start."""
    from jupyter_server.serverapp import list_running_servers

    deadline = time.monotonic() + wait_s
    while True:
        for info in list_running_servers():
            if Path(info.get("root_dir", "")).resolve() == folder.resolve():
                return address(info["port"], info["token"])
        if time.monotonic() > deadline:
            return None
        time.sleep(1)


def run(args: argparse.Namespace) -> int:
    folder = Path(args.notebooks)
    if args.url:
        found = running(folder)
        if found is None:
            print(f"No JupyterLab is running on {folder.resolve()}/: start it with `redis-workbook lab`.",
                  file=sys.stderr)
            return 1
        print(f"JupyterLab: {found}")
        return 0
    if not folder.is_dir():
        if args.notebooks != NOTEBOOKS:
            print(f"No folder {folder}/ here: pass --notebooks FOLDER with the notebooks to open.", file=sys.stderr)
            return 2
        try:
            written = coursefolder.copy(Path.cwd(), parts=("notebooks",))
        except FileNotFoundError as exc:
            print(f"redis-workbook lab: {exc}", file=sys.stderr)
            return 2
        print(f"Wrote the {len(written)} learner notebooks into {folder.resolve()}/; your work stays there "
              "(run `redis-workbook lab` in this folder again to go on).")
    env = dict(os.environ)
    server = None
    if env.get("REDIS_URL"):
        connect(env["REDIS_URL"]).close()
        print(f"Using Redis at {redact(env['REDIS_URL'])} (REDIS_URL).")
    else:
        server = EmbeddedRedis().start()
        env["REDIS_URL"] = server.url
        print(f"Started the embedded Redis 8 with the query engine on 127.0.0.1:{server.port}.")
        print(f"Other terminals can use it with: export REDIS_URL='{server.url}'")
    command = [sys.executable, "-m", "jupyter", "lab", f"--notebook-dir={folder}",
               f"--ServerApp.port={args.port}", "--ServerApp.port_retries=50"]
    if args.no_browser or headless():
        command.append("--no-browser")
    command += codespace_options()
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # containers and Codespaces often run as root
    # formgrader is nbgrader's instructor view; for a learner it only warns "No nbgrader_config.py file found".
    command.append("--ServerApp.jpserver_extensions=nbgrader.server_extensions.formgrader=False")
    print("Starting JupyterLab...", flush=True)
    # Ctrl-C must work however we were started: `cmd &` in a script and nohup hand us SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # Its own session keeps the terminal's Ctrl-C away from JupyterLab (which would ask
    # "Shutdown? (y/n)"); we forward a clean SIGTERM instead, and SIGTERM to us counts as Ctrl-C.
    lab = subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=die_with_parent,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    threading.Thread(target=relay, args=(lab.stdout, args.port), daemon=True).start()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return lab.wait()
    except KeyboardInterrupt:
        print("\nStopping JupyterLab and Redis...", flush=True)
        stop_processes([lab], grace=20, group=True)
        return 0
    finally:
        if server is not None:
            server.stop()
