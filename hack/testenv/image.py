"""A local Python base image, so the suite builds the project's Dockerfile with no registry.

Debian's `mmdebstrap` makes a minimal bookworm root filesystem (python3, python3-venv,
ca-certificates; no documentation, manual pages or translations) as a tarball, and `buildah`
turns it into an image (`from scratch`, `add`, `commit`) in its own storage. Both live in the
user cache, `${XDG_CACHE_HOME:-~/.cache}/gputopo/testenv/`: the tarball and a stamp in a
directory keyed by a digest of the recipe below, the image store (vfs driver, no daemon; builds
run with chroot isolation) in `buildah/`, shared by every clone so buildah's layer cache is too.
A changed recipe gets a new directory and a new image tag; nothing is rebuilt otherwise.

`ensure()` (called by `python -m hack.testenv ensure`, i.e. `make tools`) builds what is missing
and, as root on Debian, installs buildah and mmdebstrap with apt-get when they are absent;
`locate()` never builds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hack.testenv.tools import cache_root, locked, say

SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
# What Debian's own slim images leave out; the copyright files stay.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
)
MIRROR_ENV = "GPUTOPO_DEBIAN_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
IMAGE_NAME = "localhost/gputopo-python-base"
REQUIRED_COMMANDS = ("buildah", "mmdebstrap")
_STAMP = "stamp.json"
_TARBALL = "rootfs.tar"


class BaseImageUnavailableError(RuntimeError):
    """The base image is not built, and cannot be built here."""


@dataclass(frozen=True)
class BuildahStore:
    """One buildah image store: vfs storage in a directory, no daemon, chroot isolation."""

    root: Path

    def command(self, *args: str) -> list[str]:
        """`buildah --root ... --runroot ... --storage-driver vfs <args>`."""
        buildah = shutil.which("buildah") or "buildah"
        return [
            buildah,
            "--root",
            str(self.root / "storage"),
            "--runroot",
            str(self.root / "run"),
            "--storage-driver",
            "vfs",
            *args,
        ]

    @property
    def env(self) -> dict[str, str]:
        """The environment buildah runs in: chroot isolation, the layer cache on."""
        return dict(os.environ, BUILDAH_ISOLATION="chroot", BUILDAH_LAYERS="true")

    def run(
        self, *args: str, timeout: float = 600, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run buildah; a failure is an error that carries the command and its output."""
        command = self.command(*args)
        result = subprocess.run(
            command,
            env=self.env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise BaseImageUnavailableError(
                f"{' '.join(command)} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        return result

    def image_id(self, reference: str) -> str | None:
        """The image's ID in this store, or None when the store has no such image."""
        if not (self.root / "storage").is_dir():
            return None
        result = subprocess.run(
            self.command("inspect", "--type", "image", "--format", "{{.FromImageID}}", reference),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            return None
        return result.stdout.strip() or None


@dataclass(frozen=True)
class BaseImage:
    """The local base, ready to pass as `--build-arg PYTHON_IMAGE=<reference>`."""

    reference: str
    image_id: str
    store: BuildahStore
    tarball: Path


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def recipe() -> dict[str, object]:
    """Everything that determines the root filesystem (the mirror does not: same archive)."""
    return {
        "tool": "mmdebstrap",
        "suite": SUITE,
        "variant": VARIANT,
        "architecture": _arch(),
        "packages": list(PACKAGES),
        "dpkg_options": list(DPKG_OPTIONS),
        "import": "buildah from scratch; add rootfs.tar /; commit",
    }


def recipe_key() -> str:
    encoded = json.dumps(recipe(), sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()[:12]


def cache_dir() -> Path:
    """`<cache>/base-image_debian-bookworm_<arch>_<recipe digest>`."""
    return cache_root() / f"base-image_debian-{SUITE}_{_arch()}_{recipe_key()}"


def store() -> BuildahStore:
    """The image store shared by `ensure` and the packaging tests (and its layer cache)."""
    return BuildahStore(cache_root() / "buildah")


def reference() -> str:
    return f"{IMAGE_NAME}:{SUITE}-{recipe_key()}"


def _read_stamp(directory: Path) -> dict[str, object]:
    try:
        stamp = json.loads((directory / _STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def missing_commands() -> list[str]:
    return [name for name in REQUIRED_COMMANDS if shutil.which(name) is None]


def locate() -> BaseImage:
    """The built base image; BaseImageUnavailableError saying how to get it otherwise."""
    absent = missing_commands()
    if absent:
        raise BaseImageUnavailableError(
            f"{' and '.join(absent)} not found: install Debian's {' '.join(absent)} "
            "package(s), or run `make tools` as root on Debian"
        )
    directory = cache_dir()
    stamp = _read_stamp(directory)
    tarball = directory / _TARBALL
    image_store = store()
    image_id = image_store.image_id(reference())
    if not tarball.is_file() or stamp.get("tarball_size") != tarball.stat().st_size:
        raise BaseImageUnavailableError(
            f"the base image's root filesystem is not built in {directory}; run `make tools`"
        )
    if image_id is None or stamp.get("image_id") != image_id:
        raise BaseImageUnavailableError(
            f"{reference()} is not in the image store {image_store.root}; run `make tools`"
        )
    return BaseImage(reference(), image_id, image_store, tarball)


def install_commands() -> None:
    """`apt-get install buildah mmdebstrap` as root; anyone else is told what to install."""
    absent = missing_commands()
    if not absent:
        return
    apt_get = shutil.which("apt-get")
    if os.geteuid() != 0 or apt_get is None:
        raise BaseImageUnavailableError(
            f"{' and '.join(absent)} not found: install Debian's {' '.join(absent)} package(s) "
            "(apt-get install buildah mmdebstrap) to build the images in the suite"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # uidmap: buildah's user namespaces; the rest is what mmdebstrap needs to check the archive.
    wanted = [*absent, "uidmap", "debian-archive-keyring", "ca-certificates"]
    install = [apt_get, "install", "-y", "--no-install-recommends", *wanted]
    if subprocess.run(install, env=env, check=False).returncode != 0:
        subprocess.run([apt_get, "update"], env=env, check=True)
        subprocess.run(install, env=env, check=True)
    still = missing_commands()
    if still:
        raise BaseImageUnavailableError(f"apt-get ran but {' and '.join(still)} is still absent")


def _mmdebstrap_command(target: Path) -> list[str]:
    mirror = os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR
    command = [
        shutil.which("mmdebstrap") or "mmdebstrap",
        f"--variant={VARIANT}",
        f"--include={','.join(PACKAGES)}",
        f"--architectures={_arch()}",
    ]
    command += [f"--dpkgopt={option}" for option in DPKG_OPTIONS]
    return [*command, SUITE, str(target), mirror]


def _run_logged(command: Sequence[str], log: Path, timeout: float) -> None:
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        result = subprocess.run(
            list(command), stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False
        )
    if result.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-20:]
        raise BaseImageUnavailableError(
            f"{command[0]} exited {result.returncode}; full log {log}:\n" + "\n".join(tail)
        )


def _import(image_store: BuildahStore, tarball: Path) -> str:
    """`from scratch`, unpack the root filesystem, commit as `reference()`; the image ID."""
    container = image_store.run("from", "scratch").stdout.strip()
    try:
        image_store.run("add", container, str(tarball), "/")
        image_store.run(
            "config",
            "--env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env",
            "LANG=C.UTF-8",
            "--cmd",
            "python3",
            "--label",
            f"org.gputopo.base-recipe={recipe_key()}",
            container,
        )
        image_store.run("commit", "--quiet", container, reference())
    finally:
        subprocess.run(
            image_store.command("rm", container),
            env=image_store.env,
            capture_output=True,
            timeout=120,
            check=False,
        )
    image_id = image_store.image_id(reference())
    if image_id is None:
        raise BaseImageUnavailableError(f"buildah committed {reference()} but cannot find it")
    return image_id


def ensure() -> BaseImage:
    """Build the root filesystem and import it, each only if missing; return the image."""
    install_commands()
    directory = cache_dir()
    with locked(directory):
        with contextlib.suppress(BaseImageUnavailableError):
            return locate()
        stamp = _read_stamp(directory)
        tarball = directory / _TARBALL
        log = directory / "build.log"
        if not tarball.is_file() or stamp.get("tarball_size") != tarball.stat().st_size:
            staging = directory / f".rootfs-{os.getpid()}.tar"
            say(f"building the base image's root filesystem with mmdebstrap (log: {log})")
            started = time.monotonic()
            try:
                _run_logged(_mmdebstrap_command(staging), log, timeout=1800)
                staging.replace(tarball)
            finally:
                staging.unlink(missing_ok=True)
            stamp = {
                "recipe": recipe(),
                "tarball_size": tarball.stat().st_size,
                "mmdebstrap_seconds": round(time.monotonic() - started, 1),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        say(f"importing {tarball} as {reference()} into {store().root}")
        stamp["image_id"] = _import(store(), tarball)
        temporary = directory / f".{_STAMP}.{os.getpid()}"
        temporary.write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        temporary.replace(directory / _STAMP)
        return locate()
