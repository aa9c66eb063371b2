"""`redis-workbook server`: the embedded Redis in the foreground, for a terminal of its own."""

from __future__ import annotations

import argparse
import signal

from redis_workbook.server import EmbeddedRedis


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--password", default=None, help="password (default: a random one)")


def run(args: argparse.Namespace) -> int:
    stop = {signal.SIGINT, signal.SIGTERM}
    with EmbeddedRedis(port=args.port, password=args.password) as server:
        # Blocked from here (not before the server starts: children inherit the mask), so a Ctrl-C that comes
        # right after the URL is printed waits for sigwait instead of interrupting the prints.
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)
        print(f"Redis 8 with the query engine is running (started in {server.start_seconds:.3f} s).")
        print("In another terminal, point the workbook at it with:\n")
        print(f"  export REDIS_URL='{server.url}'\n")
        print("Press Ctrl-C to stop it.", flush=True)
        signal.sigwait(stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stop)
    print("Redis stopped.")
    return 0
