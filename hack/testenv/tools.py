"""Find, or build from the pinned Go modules, the binaries the integration tests run.

The pins live in `hack/tools/go.mod` (k8s.io/kubernetes, go.etcd.io/etcd/server/v3) and
`hack/tools/kwok/go.mod` (sigs.k8s.io/kwok); this module reads the versions from there, so the
go.mod files are the only place a version is written. Binaries go into a per-user cache keyed by
those versions and a digest of the go.mod/go.sum files, so every clone on a machine shares one
build, and a change of pin builds into a fresh directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hack.testenv import prometheus

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_MODULE = REPO_ROOT / "hack" / "tools"
KWOK_MODULE = TOOLS_MODULE / "kwok"

KUBE_APISERVER = "kube-apiserver"
KUBE_SCHEDULER = "kube-scheduler"
KUBE_CONTROLLER_MANAGER = "kube-controller-manager"
ETCD = "etcd"
KWOK = "kwok"
KWOK_STAGES = "kwok-stages.yaml"
KWOK_KEEP_RUNNING = "gputopo.io/kwok-keep-running"
PROMETHEUS = "prometheus"
BASE_IMAGE = "python-base-image"  # hack/testenv/image.py: the suite's local base for the Dockerfile

# The control plane, built from hack/tools (Kubernetes, etcd) and hack/tools/kwok.
GO_COMPONENTS = (KUBE_APISERVER, ETCD, KUBE_SCHEDULER, KUBE_CONTROLLER_MANAGER, KWOK)
_KUBE_COMMANDS = (KUBE_APISERVER, KUBE_SCHEDULER, KUBE_CONTROLLER_MANAGER)


@dataclass(frozen=True)
class GoTool:
    """A tool our users run beside gputopo, built from its own module under hack/tools/<dir>.

    Each has its own go.mod (its dependencies never move the control plane's pins) and its own
    cache directory keyed by its version and a digest of that module, so adding or bumping one
    never rebuilds the others.
    """

    name: str  # the binary
    directory: str  # hack/tools/<directory>
    module: str  # the module whose `require` line pins the version
    package: str  # the main package built
    # Folders of the module's source copied beside the binary (into `<name>-assets/`), e.g.
    # the CRDs a controller needs installed; `assets_dir` finds them.
    assets: tuple[str, ...] = ()
    # Only the benchmarks (tests/bench) run it: `make tools` leaves it out, `make bench`
    # (`ensure --bench`) builds it, so the suite's cold start does not pay for it.
    bench_only: bool = False

    @property
    def module_dir(self) -> Path:
        return TOOLS_MODULE / self.directory


KUEUE = GoTool(
    name="kueue",
    directory="kueue",
    module="sigs.k8s.io/kueue",
    package="sigs.k8s.io/kueue/cmd/kueue",
    assets=("config/components/crd/bases",),
)

# Tools in their own modules; `ensure` builds each that is missing (bench-only ones on request).
GO_TOOLS: tuple[GoTool, ...] = (
    # Helm 4, for the chart under charts/gputopo (helm lint / template in tests/packaging).
    GoTool(
        name="helm",
        directory="helm",
        module="helm.sh/helm/v4",
        package="helm.sh/helm/v4/cmd/helm",
    ),
    # Kueue's controller manager, which the queueing tests run (tests/controlplane/kueue.py).
    KUEUE,
    # The Kubernetes descheduler, the baseline of the rebalance benchmark (tests/bench).
    GoTool(
        name="descheduler",
        directory="descheduler",
        module="sigs.k8s.io/descheduler",
        package="sigs.k8s.io/descheduler/cmd/descheduler",
        bench_only=True,
    ),
)
COMPONENTS = (*GO_COMPONENTS, *(tool.name for tool in GO_TOOLS), PROMETHEUS, BASE_IMAGE)

# The default kwok stages ("fast": a Node becomes Ready at once, a bound Pod Running at once, a
# deleted Pod goes away), taken from the pinned kwok module's kustomize tree at build time.
_KWOK_STAGE_FILES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)

_STAMP = "stamp.json"
# Part of the cache key: changing how the binaries are built must not reuse old ones.
_BUILD_RECIPE = (
    "CGO_ENABLED=0 -mod=readonly -trimpath -ldflags=-s -w +version; kwok fast stages; "
    "Job pods kept running by annotation"
)
_MAKE_TOOLS_HINT = "run `make tools` (python -m hack.testenv ensure)"


class ToolsMissingError(RuntimeError):
    """A binary the tests need is not built yet, or cannot be built here."""


@dataclass(frozen=True)
class Pins:
    """Module versions read from the committed go.mod files."""

    kubernetes: str
    etcd: str
    kwok: str
    digest: str

    @property
    def kubernetes_major_minor(self) -> tuple[str, str]:
        match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+.*", self.kubernetes)
        if match is None:
            raise ToolsMissingError(
                f"hack/tools/go.mod: k8s.io/kubernetes version {self.kubernetes!r} "
                "is not vMAJOR.MINOR.PATCH"
            )
        return match.group(1), match.group(2)


@dataclass
class Tools:
    """Where each component is, and where it came from (cache, KUBEBUILDER_ASSETS, PATH...)."""

    pins: Pins
    cache_dir: Path
    paths: dict[str, Path] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def require(self, name: str) -> Path:
        """The path of `name`, or a ToolsMissingError saying how to get it."""
        if name in self.paths:
            return self.paths[name]
        reason = self.missing.get(name, "not located")
        raise ToolsMissingError(f"{name} is not available ({reason}); {_MAKE_TOOLS_HINT}")

    def kwok_stages(self) -> Path:
        """The stage config that belongs to the located kwok binary."""
        kwok = self.require(KWOK)
        stages = kwok.parent / KWOK_STAGES
        if not stages.is_file():
            raise ToolsMissingError(f"{stages} is missing next to {kwok}; {_MAKE_TOOLS_HINT}")
        return stages


def _go_mod_require(go_mod: Path, module: str) -> str:
    text = go_mod.read_text(encoding="utf-8")
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
    if match is None:
        raise ToolsMissingError(f"{go_mod}: no `require {module} vX.Y.Z` line")
    return match.group(1)


def read_pins(tools_module: Path = TOOLS_MODULE) -> Pins:
    """Read the pinned versions and a digest of what determines the build (modules, recipe)."""
    kwok_module = tools_module / "kwok"
    digest = hashlib.sha256(_BUILD_RECIPE.encode())
    for path in (
        tools_module / "go.mod",
        tools_module / "go.sum",
        kwok_module / "go.mod",
        kwok_module / "go.sum",
    ):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return Pins(
        kubernetes=_go_mod_require(tools_module / "go.mod", "k8s.io/kubernetes"),
        etcd=_go_mod_require(tools_module / "go.mod", "go.etcd.io/etcd/server/v3"),
        kwok=_go_mod_require(kwok_module / "go.mod", "sigs.k8s.io/kwok"),
        digest=digest.hexdigest()[:12],
    )


def cache_root() -> Path:
    """`${XDG_CACHE_HOME:-~/.cache}/gputopo/testenv`: outside the clone, shared by clones."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gputopo" / "testenv"


def _goarch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine
    )


def cache_dir_for(pins: Pins) -> Path:
    key = (
        f"k8s-{pins.kubernetes}_etcd-{pins.etcd}_kwok-{pins.kwok}"
        f"_{sys.platform}-{_goarch()}_{pins.digest}"
    )
    return cache_root() / key


def _read_stamp(cache_dir: Path) -> dict[str, dict[str, object]]:
    try:
        stamp = json.loads((cache_dir / _STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    components = stamp.get("components", {}) if isinstance(stamp, dict) else {}
    return components if isinstance(components, dict) else {}


def _write_stamp(
    cache_dir: Path, pins: Mapping[str, str], digest: str, components: Mapping[str, object]
) -> None:
    stamp = {"pins": dict(pins), "digest": digest, "components": dict(components)}
    tmp = cache_dir / f".{_STAMP}.{os.getpid()}"
    tmp.write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(cache_dir / _STAMP)


def _cached_ok(cache_dir: Path, stamp: Mapping[str, Mapping[str, object]], name: str) -> bool:
    """A cached binary counts only if the stamp recorded it and it is still the same file."""
    entry = stamp.get(name)
    path = cache_dir / name
    if entry is None or not path.is_file() or not os.access(path, os.X_OK):
        return False
    if entry.get("size") != path.stat().st_size:
        return False
    return name != KWOK or (cache_dir / KWOK_STAGES).is_file()


def _from_assets(name: str) -> Path | None:
    """The envtest convention: KUBEBUILDER_ASSETS names a directory of prebuilt binaries."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets:
        return None
    path = Path(assets) / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        return None
    if name == KWOK and not (path.parent / KWOK_STAGES).is_file():
        return None
    return path


def tool_version(tool: GoTool) -> str:
    """The version of `tool.module` pinned in its own go.mod."""
    return _go_mod_require(tool.module_dir / "go.mod", tool.module)


def tool_cache_dir(tool: GoTool) -> Path:
    """`<cache>/<name>-<version>_<os>-<arch>_<digest of its go.mod, go.sum and the recipe>`."""
    digest = hashlib.sha256(_BUILD_RECIPE.encode())
    for name in ("go.mod", "go.sum"):
        digest.update(name.encode())
        digest.update((tool.module_dir / name).read_bytes())
    key = f"{tool.name}-{tool_version(tool)}_{sys.platform}-{_goarch()}_{digest.hexdigest()[:12]}"
    return cache_root() / key


def assets_dir(binary: Path, tool: GoTool) -> Path:
    """Where the copied source folders of ``tool`` lie, next to its located ``binary``."""
    return binary.parent / f"{tool.name}-assets"


def _assets_ok(binary: Path, tool: GoTool) -> bool:
    return all((assets_dir(binary, tool) / folder).is_dir() for folder in tool.assets)


def _locate_tool(tool: GoTool, tools: Tools) -> None:
    asset = _from_assets(tool.name)
    cache_dir = tool_cache_dir(tool)
    if asset is not None and _assets_ok(asset, tool):
        tools.paths[tool.name] = asset
        tools.sources[tool.name] = "KUBEBUILDER_ASSETS"
    elif _cached_ok(cache_dir, _read_stamp(cache_dir), tool.name) and _assets_ok(
        cache_dir / tool.name, tool
    ):
        tools.paths[tool.name] = cache_dir / tool.name
        tools.sources[tool.name] = "cache"
    else:
        tools.missing[tool.name] = f"not built in {cache_dir}"


def locate(pins: Pins | None = None) -> Tools:
    """Find every component without building anything; what is absent lands in `missing`."""
    pins = pins or read_pins()
    cache_dir = cache_dir_for(pins)
    tools = Tools(pins=pins, cache_dir=cache_dir)
    stamp = _read_stamp(cache_dir)
    for name in GO_COMPONENTS:
        asset = _from_assets(name)
        if asset is not None:
            tools.paths[name] = asset
            tools.sources[name] = "KUBEBUILDER_ASSETS"
        elif _cached_ok(cache_dir, stamp, name):
            tools.paths[name] = cache_dir / name
            tools.sources[name] = "cache"
        else:
            tools.missing[name] = f"not built in {cache_dir}"
    for tool in GO_TOOLS:
        _locate_tool(tool, tools)
    try:
        found = prometheus.find()
    except prometheus.PrometheusUnavailableError as error:
        tools.missing[PROMETHEUS] = str(error)
    else:
        if found is not None:
            tools.paths[PROMETHEUS], tools.sources[PROMETHEUS] = found
        else:
            tools.missing[PROMETHEUS] = "no prometheus on PATH and PROMETHEUS_BIN unset"
    _locate_base_image(tools)
    return tools


def _locate_base_image(tools: Tools) -> None:
    from hack.testenv import image  # image.py reads cache_root() from this module

    try:
        base = image.locate()
    except image.BaseImageUnavailableError as error:
        tools.missing[BASE_IMAGE] = str(error)
    else:
        tools.paths[BASE_IMAGE] = base.tarball
        tools.sources[BASE_IMAGE] = base.reference


def find_go() -> Path | None:
    found = shutil.which("go")
    if found:
        return Path(found)
    fallback = Path("/usr/local/go/bin/go")
    return fallback if fallback.is_file() else None


@contextlib.contextmanager
def locked(cache_dir: Path) -> Iterator[None]:
    """One builder per cache directory; a second `ensure` waits, then finds the work done."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _version_ldflags(pins: Pins) -> str:
    major, minor = pins.kubernetes_major_minor
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={pins.kubernetes}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    return " ".join(flags)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # Static binaries like the upstream release builds; the committed go.sum is authoritative.
    env["CGO_ENABLED"] = "0"
    env["GOFLAGS"] = " ".join(
        flag for flag in (env.get("GOFLAGS", ""), "-mod=readonly", "-buildvcs=false") if flag
    )
    return env


def _run_go(go: Path, args: list[str], module: Path, log: Path) -> None:
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ (cd {module}) {go} {' '.join(args)}\n")
        out.flush()
        result = subprocess.run(
            [str(go), *args], cwd=module, env=_go_env(), stdout=out, stderr=subprocess.STDOUT
        )
    if result.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
        raise ToolsMissingError(
            f"go {' '.join(args[:1])} in {module} failed (exit {result.returncode}); "
            f"full log {log}:\n" + "\n".join(tail)
        )


def _module_dir(go: Path, module_dir: Path, module: str, log: Path) -> Path:
    _run_go(go, ["mod", "download", module], module_dir, log)
    result = subprocess.run(
        [str(go), "list", "-m", "-f", "{{.Dir}}", module],
        cwd=module_dir,
        env=_go_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(result.stdout.strip())


def _go_build(
    go: Path, module: Path, ldflags: str, output: str, packages: list[str], log: Path
) -> None:
    _run_go(go, ["build", "-trimpath", f"-ldflags={ldflags}", "-o", output, *packages], module, log)


def _build(go: Path, pins: Pins, names: list[str], staging: Path, log: Path) -> None:
    """Build `names` into `staging`; kube-apiserver and kube-scheduler share one `go build`."""
    kube = [f"k8s.io/kubernetes/cmd/{name}" for name in names if name in _KUBE_COMMANDS]
    if kube:
        _go_build(go, TOOLS_MODULE, _version_ldflags(pins), f"{staging}/", kube, log)
    if ETCD in names:
        # go.etcd.io/etcd/server/v3 is itself `package main` (etcdmain.Main).
        _go_build(
            go, TOOLS_MODULE, "-s -w", str(staging / ETCD), ["go.etcd.io/etcd/server/v3"], log
        )
    if KWOK in names:
        _go_build(go, KWOK_MODULE, "-s -w", str(staging / KWOK), ["sigs.k8s.io/kwok/cmd/kwok"], log)
        source = _module_dir(go, KWOK_MODULE, "sigs.k8s.io/kwok", log)
        documents = [
            _keep_running_unless_done(yaml.safe_load((source / relative).read_text("utf-8")))
            for relative in _KWOK_STAGE_FILES
        ]
        header = (
            f"# Default kwok stages from sigs.k8s.io/kwok@{pins.kwok} (node fast, pod fast); Job "
            f'pods annotated {KWOK_KEEP_RUNNING}: "true" are not completed.\n'
        )
        (staging / KWOK_STAGES).write_text(
            header + "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in documents),
            encoding="utf-8",
        )


def _keep_running_unless_done(stage: dict[str, Any]) -> dict[str, Any]:
    """kwok's fast `pod-complete` stage makes every Job's pod Succeed as soon as it runs; tests
    that need a Job running (Kueue's preemption of admitted work) annotate its pod template
    with KWOK_KEEP_RUNNING, which this stage then leaves alone."""
    if stage.get("metadata", {}).get("name") == "pod-complete":
        expressions = stage["spec"]["selector"]["matchExpressions"]
        expressions.append(
            {"key": f'.metadata.annotations["{KWOK_KEEP_RUNNING}"]', "operator": "DoesNotExist"}
        )
    return stage


def say(message: str) -> None:
    """One progress line on stderr (builds take minutes; CI shows what is happening)."""
    print(f"testenv: {message}", file=sys.stderr, flush=True)


def _ensure_tool(go: Path, tool: GoTool) -> None:
    """Build one tool of GO_TOOLS into its own cache directory, unless a racer already did."""
    cache_dir = tool_cache_dir(tool)
    with locked(cache_dir):
        stamp = _read_stamp(cache_dir)
        if _cached_ok(cache_dir, stamp, tool.name) and _assets_ok(cache_dir / tool.name, tool):
            return
        log = cache_dir / "build.log"
        staging = cache_dir / f".build-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        say(f"building {tool.name} {tool_version(tool)} with {go} (log: {log})")
        started = time.monotonic()
        try:
            _go_build(go, tool.module_dir, "-s -w", str(staging / tool.name), [tool.package], log)
            if tool.assets:
                source = _module_dir(go, tool.module_dir, tool.module, log)
                for folder in tool.assets:
                    # Go's module cache is read-only; the copy must be deletable on rebuild.
                    shutil.copytree(
                        source / folder, staging / "assets" / folder, copy_function=shutil.copyfile
                    )
                for path in (staging / "assets").rglob("*"):
                    path.chmod(0o755 if path.is_dir() else 0o644)
                (staging / "assets").chmod(0o755)
                target = assets_dir(cache_dir / tool.name, tool)
                shutil.rmtree(target, ignore_errors=True)
                (staging / "assets").replace(target)
            (staging / tool.name).replace(cache_dir / tool.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        seconds = round(time.monotonic() - started, 1)
        stamp[tool.name] = {
            "size": (cache_dir / tool.name).stat().st_size,
            "build_seconds": seconds,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _write_stamp(cache_dir, {tool.module: tool_version(tool)}, cache_dir.name, stamp)
        say(f"built {tool.name} in {seconds:.0f} s")


def ensure(pins: Pins | None = None, install_prometheus: bool = True, bench: bool = False) -> Tools:
    """Build what is missing (and only that), find or install Prometheus, return the locations.
    ``bench``: the benchmarks' own tools too (`GoTool.bench_only`)."""
    pins = pins or read_pins()
    tools = locate(pins)
    wanted = [name for name in GO_COMPONENTS if name in tools.missing]
    if wanted:
        go = find_go()
        if go is None:
            raise ToolsMissingError(
                f"cannot build {', '.join(wanted)}: `go` is not on PATH. Install Go (the version "
                "in hack/tools/go.mod or newer), or set KUBEBUILDER_ASSETS to a directory holding "
                "prebuilt kube-apiserver, etcd, kube-scheduler, kube-controller-manager and kwok "
                "(+ kwok-stages.yaml)"
            )
        cache_dir = tools.cache_dir
        with locked(cache_dir):
            stamp = _read_stamp(cache_dir)
            wanted = [name for name in wanted if not _cached_ok(cache_dir, stamp, name)]
            if wanted:
                log = cache_dir / "build.log"
                staging = cache_dir / f".build-{os.getpid()}"
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir()
                say(f"building {', '.join(wanted)} with {go} (log: {log})")
                say("a cold build takes 10 min on 2 idle cores; later builds reuse Go's cache")
                started = time.monotonic()
                try:
                    _build(go, pins, wanted, staging, log)
                    seconds = round(time.monotonic() - started, 1)
                    for name in wanted:
                        (staging / name).replace(cache_dir / name)
                        stamp[name] = {
                            "size": (cache_dir / name).stat().st_size,
                            "build_seconds": seconds,
                            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        }
                    if KWOK in wanted:
                        (staging / KWOK_STAGES).replace(cache_dir / KWOK_STAGES)
                    _write_stamp(
                        cache_dir,
                        {"kubernetes": pins.kubernetes, "etcd": pins.etcd, "kwok": pins.kwok},
                        pins.digest,
                        stamp,
                    )
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
                say(f"built {', '.join(wanted)} in {seconds:.0f} s")
        tools = locate(pins)
    missing_tools = [
        tool for tool in GO_TOOLS if tool.name in tools.missing and (bench or not tool.bench_only)
    ]
    if missing_tools:
        go = find_go()
        if go is None:
            names = ", ".join(tool.name for tool in missing_tools)
            raise ToolsMissingError(f"cannot build {names}: `go` is not on PATH")
        for tool in missing_tools:
            _ensure_tool(go, tool)
        tools = locate(pins)
    if PROMETHEUS in tools.missing and install_prometheus and not os.environ.get("PROMETHEUS_BIN"):
        try:
            prometheus.install()
        except (prometheus.PrometheusUnavailableError, subprocess.CalledProcessError) as error:
            raise ToolsMissingError(str(error)) from error
        tools = locate(pins)
    if BASE_IMAGE in tools.missing:
        from hack.testenv import image

        try:
            image.ensure()
        except (image.BaseImageUnavailableError, subprocess.CalledProcessError) as error:
            raise ToolsMissingError(str(error)) from error
        tools = locate(pins)
    return tools
