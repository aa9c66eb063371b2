"""The other ways in (Codespaces, conda) stay in step with the package they install."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import yaml
from packaging.specifiers import SpecifierSet

from redis_workbook import cli, lab

ROOT = Path(__file__).resolve().parents[1]


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


def test_devcontainer_installs_the_package_and_forwards_jupyterlab() -> None:
    text = (ROOT / ".devcontainer" / "devcontainer.json").read_text()
    config = json.loads(strip_jsonc_comments(text))
    version = re.search(r"python:\d+-(3\.\d+)", config["image"]).group(1)
    assert f"{version}.0" in requires_python()
    assert "pip install -e ." in config["postCreateCommand"]
    assert lab_default_port() in config["forwardPorts"]
    command = config["postStartCommand"].split()
    assert command[command.index("redis-workbook") + 1] in cli.COMMANDS
    # The Docker route is documented next to the switch that enables it.
    assert "docker-in-docker" in text and "redis/redis-stack-server" in text and "REDIS_URL" in text


def test_environment_yml_is_conda_forge_python_plus_this_package() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"][0] == "conda-forge"
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert f"{python.split('=')[1]}.0" in requires_python()
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip
