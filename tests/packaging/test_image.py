"""The project's Dockerfile, built for real: both targets on the suite's local Debian base.

`buildah bud` (vfs storage, chroot isolation, no daemon) builds the `agent` and `scheduler`
targets with `--build-arg PYTHON_IMAGE=<the base from hack/testenv/image.py>`, then `buildah run`
runs the images' entrypoints as the image's own user and compares what they print with the same
command run from this virtualenv. The store and its layer cache are shared with `make tools`
(the user cache), so a rebuild after a source change only reruns the project's install.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hack.testenv import image

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SAMPLE = REPO / "scheduler" / "samples" / "cluster.yaml"
UID = 65532
BUILD_TIMEOUT_S = 1200
# Half of the 509 MB image that carried numpy and the official client to every GPU node.
AGENT_IMAGE_BUDGET_BYTES = 254 * 1000 * 1000
# Cached layers older than this, no longer named by any image, are removed before a build, so
# the vfs store (a full copy of the file tree per layer) does not grow with every source change.
STALE_LAYER_CACHE_S = 24 * 3600


@dataclass(frozen=True)
class BuiltImage:
    target: str
    reference: str
    container: str
    store: image.BuildahStore
    build_seconds: float

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`buildah run` in a working container of the image, as the image's configured user."""
        result = subprocess.run(
            self.store.command("run", self.container, "--", *command),
            env=self.store.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"buildah run {self.target}: {' '.join(command)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
            )
        return result

    def config(self) -> dict[str, object]:
        out = self.store.run("inspect", "--type", "image", self.reference).stdout
        config: dict[str, object] = json.loads(out)["OCIv1"]["config"]
        return config

    def entrypoint(self) -> list[str]:
        entrypoint = self.config()["Entrypoint"]
        assert isinstance(entrypoint, list)
        return [str(word) for word in entrypoint]

    def env(self) -> dict[str, str]:
        variables = self.config().get("Env") or []
        assert isinstance(variables, list)
        return dict(str(variable).partition("=")[::2] for variable in variables)

    def size_bytes(self) -> int:
        """The image's unpacked size as `buildah images` reports it (3 significant digits)."""
        out = self.store.run("images", "--json", self.reference).stdout
        (entry,) = json.loads(out)
        return _parse_size(str(entry["size"]))


_SIZE_UNITS = {"B": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9}


def _parse_size(text: str) -> int:
    """buildah's sizes are decimal, like docker's: "178 MB"."""
    number, unit = text.split()
    return round(float(number) * _SIZE_UNITS[unit])


def _venv(built: BuiltImage, *command: str) -> subprocess.CompletedProcess[str]:
    """The same command from this virtualenv, in the image's environment (not the suite's: the
    suite sets variables, such as NVIDIA_MIG_MONITOR_DEVICES, that the agent reads)."""
    program, *args = command
    env = built.env()
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(REPO)
    return subprocess.run(
        [str(VENV_BIN / program), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )


def _host_pip_settings() -> list[str]:
    """`--volume` options that give the build's pip this machine's pip settings (index, CA).

    Where the package index is reached through a proxy with its own certificate authority, pip
    here is configured for it (/etc/pip.conf, PIP_CERT...) and pip in the build must be too;
    elsewhere there is nothing to pass. Read-only, and only for the build's RUN steps: nothing of
    it lands in a layer.
    """
    files = {Path("/etc/pip.conf")}
    for variable in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(variable):
            files.add(Path(os.environ[variable]))
    options: list[str] = []
    for path in sorted(files):
        if path.is_file():
            options += ["--volume", f"{path.resolve()}:{path}:ro"]
    return options


def _remove_stale_layer_cache(store: image.BuildahStore) -> None:
    listed = json.loads(store.run("images", "--all", "--json").stdout or "[]")
    now = time.time()
    stale = [
        entry["id"]
        for entry in listed
        if not entry.get("names") and now - float(entry.get("created", now)) > STALE_LAYER_CACHE_S
    ]
    if stale:
        subprocess.run(
            store.command("rmi", "--force", *stale),
            env=store.env,
            capture_output=True,
            timeout=600,
            check=False,
        )


@pytest.fixture(scope="module")
def base() -> image.BaseImage:
    try:
        return image.locate()
    except image.BaseImageUnavailableError as error:
        pytest.fail(f"no local base image for the Dockerfile: {error}")


@pytest.fixture(scope="module")
def images(base: image.BaseImage) -> Iterator[dict[str, BuiltImage]]:
    """Both targets, tagged per clone (two clones never overwrite each other's images)."""
    clone = hashlib.sha256(str(REPO).encode()).hexdigest()[:10]
    _remove_stale_layer_cache(base.store)
    built: dict[str, BuiltImage] = {}
    try:
        for target in ("agent", "scheduler"):
            reference = f"localhost/gputopo-{target}:suite-{clone}"
            started = time.monotonic()
            base.store.run(
                "bud",
                "--layers",
                "--isolation",
                "chroot",
                "--pull-never",
                *_host_pip_settings(),
                "--build-arg",
                f"PYTHON_IMAGE={base.reference}",
                "--target",
                target,
                "--tag",
                reference,
                "--file",
                str(REPO / "Dockerfile"),
                str(REPO),
                timeout=BUILD_TIMEOUT_S,
            )
            seconds = time.monotonic() - started
            container = base.store.run("from", "--pull-never", reference).stdout.strip()
            built[target] = BuiltImage(target, reference, container, base.store, seconds)
        built["agent"].store.run("copy", built["agent"].container, str(SAMPLE), "/tmp/cluster.yaml")
        built["scheduler"].store.run(
            "copy", built["scheduler"].container, str(SAMPLE), "/tmp/cluster.yaml"
        )
        yield built
    finally:
        for each in built.values():
            subprocess.run(
                base.store.command("rm", each.container),
                env=base.store.env,
                capture_output=True,
                timeout=120,
                check=False,
            )


@pytest.mark.parametrize("target", ["agent", "scheduler"])
def test_image_runs_as_the_numeric_non_root_user(
    images: dict[str, BuiltImage], target: str
) -> None:
    built = images[target]
    assert built.config()["User"] == f"{UID}:{UID}"
    assert built.run("id", "-u").stdout.strip() == str(UID)
    assert built.run("id", "-g").stdout.strip() == str(UID)


@pytest.mark.parametrize(
    ("target", "entrypoint"), [("agent", "gputopo-agent"), ("scheduler", "gputopo-scheduler")]
)
def test_image_entrypoint_is_its_deployable(
    images: dict[str, BuiltImage], target: str, entrypoint: str
) -> None:
    built = images[target]
    assert built.entrypoint() == [entrypoint]
    assert built.config()["Cmd"] == ["run"]
    assert built.run(*built.entrypoint(), "--version").stdout == f"{entrypoint} 0.1.0\n"


def test_agent_image_discovers_the_mocked_dgx_h100_like_the_venv(
    images: dict[str, BuiltImage],
) -> None:
    agent = images["agent"]
    command = ("discover", "--mock", "dgx-h100", "-o", "json")
    in_image = agent.run(*agent.entrypoint(), *command).stdout
    document = json.loads(in_image)
    assert len(document["gpus"]) == 8
    assert document["interconnect"] == "nvswitch"
    assert document == json.loads(_venv(agent, "gputopo-agent", *command).stdout)


@pytest.mark.parametrize("profile", ["dgx-h100", "dgx-a100-mig"])
def test_agent_image_labels_the_mocked_machine_like_the_venv(
    images: dict[str, BuiltImage], profile: str
) -> None:
    agent = images["agent"]
    command = ("labels", "--mock", profile, "--node-name", "gpu-node-1", "--mig-strategy", "mixed")
    in_image = json.loads(agent.run(*agent.entrypoint(), *command).stdout)
    assert in_image["labels"]["gputopo.io/gpu.present"] == "true"
    assert in_image == json.loads(_venv(agent, "gputopo-agent", *command).stdout)


def test_scheduler_image_simulates_the_sample_like_the_venv(
    images: dict[str, BuiltImage],
) -> None:
    scheduler = images["scheduler"]
    in_image = scheduler.run(
        *scheduler.entrypoint(), "simulate", "--cluster", "/tmp/cluster.yaml", "-o", "json"
    ).stdout
    command = ("gputopo-scheduler", "simulate", "--cluster", str(SAMPLE), "-o", "json")
    in_venv = _venv(scheduler, *command)
    placed = json.loads(in_image)
    assert placed == json.loads(in_venv.stdout)
    assert any(pod["node"] for pod in placed["pods"])


def test_agent_image_carries_no_numpy(images: dict[str, BuiltImage]) -> None:
    agent = images["agent"]
    probe = "import importlib.util; print(importlib.util.find_spec('numpy'))"
    assert agent.run("python3", "-c", probe).stdout == "None\n"
    scheduler = images["scheduler"]
    assert scheduler.run("python3", "-c", probe).stdout.startswith("ModuleSpec(name='numpy'")


def test_scheduler_in_the_agent_image_says_the_extra_is_missing(
    images: dict[str, BuiltImage],
) -> None:
    agent = images["agent"]
    command = ("gputopo-scheduler", "simulate", "--cluster", "/tmp/cluster.yaml")
    result = agent.run(*command, check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert (
        "gputopo-scheduler: error: numpy is not installed: the scheduler needs the `scheduler` "
        "extra (pip install 'gputopo[scheduler]', or the scheduler image)\n"
    ) in result.stderr
    assert "Traceback" not in result.stderr


def test_agent_image_is_at_most_half_of_the_old_single_image(
    images: dict[str, BuiltImage],
) -> None:
    """On the local Debian base; docs/deployment.md records the sizes on both bases."""
    agent, scheduler = images["agent"], images["scheduler"]
    assert agent.size_bytes() <= AGENT_IMAGE_BUDGET_BYTES
    assert agent.size_bytes() < scheduler.size_bytes()
