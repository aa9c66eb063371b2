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
from pathlib import Path
from typing import TextIO

from redis_workbook import coursefolder
from redis_workbook.connection import connect, redact
from redis_workbook.server import EmbeddedRedis, die_with_parent

NOTEBOOKS = "notebooks"
URL = re.compile(r"http://127\.0\.0\.1:(\d+)/lab\?token=\w+")
CONTROL_C = "Use Control-C to stop this server"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--notebooks", default=NOTEBOOKS,
                        help="folder to open (default: notebooks; when there is none here, the package's learner "
                             "notebooks are written into it first)")
    parser.add_argument("--port", type=int, default=8888, help="JupyterLab port (default: 8888)")
    parser.add_argument("--no-browser", action="store_true",
                        help="don't open a browser (the default when there is no display)")


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
            if int(found.group(1)) != port:
                sys.stdout.write(f"Port {port} was busy, so JupyterLab is on port {found.group(1)}.\n")
            sys.stdout.write(f"\nJupyterLab is ready. Open {found.group(0)}\n"
                             "(Ctrl-C here stops JupyterLab and Redis.)\n\n")
        sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    folder = Path(args.notebooks)
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
        lab.send_signal(signal.SIGTERM)
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(lab.pid, signal.SIGKILL)
            lab.wait()
        return 0
    finally:
        if server is not None:
            server.stop()
