"""The other ways in (Codespaces, conda) stay in step with the package they install.

The devcontainer is read by the real devcontainers CLI (npm's @devcontainers/cli, which asks a Docker
engine about existing containers: the suite's private one), and its lifecycle commands run as an
ordinary user in a clean copy of the repository, with a Codespace's environment variables set: the
install, JupyterLab started in the background on a moved port, the address printed on attach, and
JupyterLab accepting requests from the Codespace's forwarded origin (and refusing others).
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from ordinary_user import TOOLS, User, as_user, processes_of, python_installation, throwaway_user, user_env
from packaging.specifiers import SpecifierSet
from processes import wait_gone

from redis_workbook import lab

ROOT = Path(__file__).resolve().parents[1]
CLI_VERSION = "0.89"  # @devcontainers/cli, from the npm registry
CODESPACE = {"CODESPACES": "true", "CODESPACE_NAME": "learner-workbook-x4q", "GITHUB_CODESPACES_PORT_FORWARDING_DOMAIN":
             "app.github.dev"}


def strip_jsonc_comments(text: str) -> str:
    """Drop // comments outside strings (devcontainer.json is JSON with comments; URLs hold '//')."""
    out, in_string, i = [], False, 0
    while i < len(text):
        char = text[i]
        if in_string:
            out.append(char)
            if char == "\\":
                out.append(text[i + 1])
                i += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
            out.append(char)
        elif text.startswith("//", i):
            i = text.find("\n", i) - 1 if "\n" in text[i:] else len(text)
        else:
            out.append(char)
        i += 1
    return "".join(out)


def lab_default_port() -> int:
    parser = argparse.ArgumentParser()
    lab.add_arguments(parser)
    return parser.get_default("port")


def requires_python() -> SpecifierSet:
    # A regex, not tomllib: the project supports Python 3.10, which has no tomllib.
    text = (ROOT / "pyproject.toml").read_text()
    return SpecifierSet(re.search(r'^requires-python\s*=\s*"([^"]+)"', text, re.MULTILINE).group(1))


def devcontainer_config() -> dict:
    return json.loads(strip_jsonc_comments((ROOT / ".devcontainer" / "devcontainer.json").read_text()))


def test_devcontainer_installs_the_package_and_forwards_jupyterlab() -> None:
    text = (ROOT / ".devcontainer" / "devcontainer.json").read_text()
    config = devcontainer_config()
    # The maintained tag line (python:<version>-<debian>), not one frozen to an image major ("1-3.11-bookworm").
    version = re.fullmatch(r"mcr\.microsoft\.com/devcontainers/python:(3\.\d+)-bookworm", config["image"]).group(1)
    assert f"{version}.0" in requires_python()
    assert config["postCreateCommand"] == "./workbook setup"
    assert lab_default_port() in config["forwardPorts"]
    assert "./workbook lab" in config["postStartCommand"]
    # The Docker route is documented next to the switch that enables it.
    assert "docker-in-docker" in text and "redis/redis-stack-server" in text and "REDIS_URL" in text


def test_environment_yml_is_conda_forge_python_plus_this_package() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"][0] == "conda-forge"
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert f"{python.split('=')[1]}.0" in requires_python()
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip


def test_devcontainers_cli_reads_the_configuration(docker_engine, tmp_path: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: the devcontainers CLI comes from the npm registry")
    subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(tmp_path),
                    f"@devcontainers/cli@{CLI_VERSION}"], check=True, timeout=300)
    read = subprocess.run([str(tmp_path / "node_modules" / ".bin" / "devcontainer"), "read-configuration",
                           "--workspace-folder", str(ROOT)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **docker_engine.env})
    assert read.returncode == 0, read.stderr
    config = json.loads(read.stdout)["configuration"]
    # The CLI substitutes the variables a Codespace substitutes: the venv is the workspace's own.
    settings = config["customizations"]["vscode"]["settings"]
    assert settings["python.defaultInterpreterPath"] == f"/workspaces/{ROOT.name}/.venv/bin/python"
    written = devcontainer_config()
    written["customizations"]["vscode"]["settings"] = settings
    assert config == {**written, "configFilePath": config["configFilePath"]}
    assert config["configFilePath"]["path"] == str(ROOT / ".devcontainer" / "devcontainer.json")


def clean_copy(destination: Path) -> None:
    """The repository's files as they are (committed or not, ignored ones left out): what a clone would hold."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


@pytest.fixture
def codespace_user() -> Iterator[User]:
    if os.geteuid() != 0 or any(shutil.which(tool) is None for tool in TOOLS):
        pytest.skip(f"needs root and {', '.join(TOOLS)} to add a throwaway user (the devcontainer's vscode)")
    with throwaway_user("rwcs") as user:
        yield user


def lab_process(user: User) -> int | None:
    """The user's `redis-workbook lab` (the one postStartCommand started), by its command line."""
    for pid in os.listdir("/proc"):
        try:
            if os.stat(f"/proc/{pid}").st_uid != user.uid:
                continue
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if any(arg.endswith(b"redis-workbook") for arg in argv) and b"lab" in argv and b"--url" not in argv:
            return int(pid)
    return None


def browser(port: int, token: str, host: str | None = None) -> urllib.request.OpenerDirector:
    """A client logged in as a browser is after opening the printed address: by cookie, not by token (a
    token-authenticated request skips Jupyter's origin check; a browser's later requests carry no token).
    `host`: the Host header a proxy passes on (Jupyter names its login cookie after it)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    headers = {"Host": host} if host else {}
    opener.open(urllib.request.Request(f"http://127.0.0.1:{port}/lab?token={token}", headers=headers),
                timeout=60).close()
    return opener


def status(opener: urllib.request.OpenerDirector, port: int, headers: dict[str, str]) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/status", headers=headers)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_lifecycle_commands_as_an_ordinary_user_in_a_codespace(codespace_user: User) -> None:
    user, config = codespace_user, devcontainer_config()
    workspace = user.home / "redis-workbook"
    clean_copy(workspace)
    subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(workspace)], check=True)
    # The user's python3 is the one this suite runs on; folders above it that the user cannot enter are covered.
    python = Path(sys.base_prefix) / "bin" / "python3"
    env = {**user_env(user, [str(python.parent)]), **CODESPACE, "PYTHON": str(python)}

    def lifecycle(command: str, timeout: float) -> subprocess.CompletedProcess[str]:
        line = as_user(user, [python_installation(), workspace], ["sh", "-c", f"cd {workspace} && {command}"])
        return subprocess.run(line, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    created = lifecycle(config["postCreateCommand"], timeout=900)
    assert created.returncode == 0, created.stdout + created.stderr
    assert (workspace / ".venv" / "bin" / "redis-workbook").exists()

    with socket.socket() as taken:  # a Codespace where 8888 is busy: JupyterLab moves and says where
        try:
            taken.bind(("127.0.0.1", lab_default_port()))
            taken.listen()
        except OSError:
            pass  # busy already
        started = lifecycle(config["postStartCommand"], timeout=60)
        assert started.returncode == 0, started.stdout + started.stderr
        try:
            attached = lifecycle(config["postAttachCommand"], timeout=300)
            log = Path("/tmp/redis-workbook-lab.log").read_text()
            assert attached.returncode == 0, attached.stdout + attached.stderr + log
            found = re.fullmatch(r"JupyterLab: https://learner-workbook-x4q-(\d+)\.app\.github\.dev/lab\?token=(\w+)",
                                 attached.stdout.strip())
            assert found, attached.stdout
            port, token = int(found.group(1)), found.group(2)
            assert port != lab_default_port()
            assert f"Port {lab_default_port()} was busy, so JupyterLab is on port {port}" in log
            assert f"Open https://learner-workbook-x4q-{port}.app.github.dev/lab?token={token}" in log
            assert "No nbgrader_config.py" not in log and "Control-C" not in log

            # GitHub's port forwarding may pass the browser's Host on or rewrite it to the loopback address:
            # either way a logged-in browser on the forwarded origin gets through, and another origin does not.
            forwarded = f"learner-workbook-x4q-{port}.app.github.dev"
            proxied, rewritten = browser(port, token, host=forwarded), browser(port, token)
            origin = {"Origin": f"https://{forwarded}"}
            assert status(proxied, port, {**origin, "Host": forwarded}) == 200
            assert status(rewritten, port, origin) == 200
            assert status(rewritten, port, {"Origin": "https://evil.example"}) == 404
            assert status(rewritten, port, {"Origin": f"https://{forwarded}.evil.example"}) == 404
            assert status(urllib.request.build_opener(), port, origin) == 403  # no token, no cookie
        finally:
            pid = lab_process(user)
            if pid is not None:  # SIGTERM counts as Ctrl-C: JupyterLab, its kernels and Redis stop
                os.kill(pid, signal.SIGTERM)
                wait_gone({pid}, timeout=60)
    assert pid is not None
    assert not wait_gone(set(processes_of(user.uid)), timeout=30), "the lab left processes running"
