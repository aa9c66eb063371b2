"""Session fixture `docker_engine`: a Docker engine with the two local stand-in Redis images.

It starts a private dockerd (tests/dockerd.py: own socket, data and exec
roots in a temp folder, no bridge, no iptables), points DOCKER_HOST at it for
the session, sets REDIS_WORKBOOK_IMAGE to the local redis:8 stand-in unless
already set (no registry is reachable here, so the default `redis:8.2` cannot
be pulled), builds the images with `docker import`, and at the end of the
session stops dockerd by its PID and checks that nothing it ran is left.
Subprocesses (e.g. the grader run with `--backend testcontainers`) inherit the
environment; `engine.env` has it as a dict too.

Where no private dockerd can run (not root, docker.io not installed) but a
Docker engine already answers at DOCKER_HOST, that engine is used and the images
are built there (reused on later runs). Otherwise the tests skip and say why;
in CI (CI set) a dockerd that is installed but fails to start fails the tests.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import docker
import pytest
from docker_image import LocalImage, build_local_images
from dockerd import DockerdUnavailable, PrivateDockerd, find_dockerd

from redis_workbook.grading.containers import IMAGE_ENV, TESTCONTAINERS_DEFAULTS, docker_available


@dataclass
class DockerEngine:
    """What the tests get: where the engine is, the built images and what each step cost."""

    host: str
    images: dict[str, LocalImage]
    private: PrivateDockerd | None
    start_seconds: float | None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def redis_image(self) -> str:
        return self.images["redis"].tag

    @property
    def stack_image(self) -> str:
        return self.images["redis-stack"].tag

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, version="auto")


def _start_private() -> PrivateDockerd | None:
    """A private dockerd, or None when this machine cannot run one (then the reason is skipped on)."""
    try:
        return PrivateDockerd().start()
    except DockerdUnavailable as exc:
        must_run = os.environ.get("CI") and find_dockerd() is not None and os.geteuid() == 0
        if must_run:
            pytest.fail(f"dockerd is installed and we are root, yet it did not start: {exc}")
        if docker_available():
            return None
        pytest.skip(f"No Docker engine for the container tests: {exc}")


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    private = _start_private()
    host = private.host if private else os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    env = {"DOCKER_HOST": host, **TESTCONTAINERS_DEFAULTS}
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                if name == "DOCKER_HOST" or name not in os.environ:  # the user's testcontainers choices win
                    patch.setenv(name, value)
            with contextlib.closing(docker.DockerClient(base_url=host, version="auto")) as client:
                images = build_local_images(client)
            if IMAGE_ENV not in os.environ:
                patch.setenv(IMAGE_ENV, images["redis"].tag)
            env = {name: os.environ[name] for name in (*env, IMAGE_ENV)}
            yield DockerEngine(host, images, private, private.start_seconds if private else None, env)
    finally:
        if private is not None:
            private.stop()
            left = private.leftovers()
            assert not left, f"the private dockerd left processes running: {left}"
