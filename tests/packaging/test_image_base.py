"""The suite's local base image (hack/testenv/image.py): its cache key, its errors, its content."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hack.testenv import image


def test_cache_lives_in_the_user_cache_keyed_by_the_recipe(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    key = image.recipe_key()
    assert image.cache_dir().parent == tmp_path / "gputopo" / "testenv"
    assert image.cache_dir().name.endswith(f"_{key}")
    assert image.reference() == f"localhost/gputopo-python-base:bookworm-{key}"
    monkeypatch.setattr(image, "PACKAGES", (*image.PACKAGES, "curl"))
    assert image.recipe_key() != key


def test_mirror_is_configurable_and_not_part_of_the_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = image.recipe_key()
    monkeypatch.setenv(image.MIRROR_ENV, "http://mirror.example/debian")
    command = image._mmdebstrap_command(tmp_path / "rootfs.tar")
    assert command[-3:] == [
        "bookworm",
        str(tmp_path / "rootfs.tar"),
        "http://mirror.example/debian",
    ]
    assert "--variant=minbase" in command
    assert "--include=python3,python3-venv,ca-certificates" in command
    assert "--dpkgopt=path-exclude=/usr/share/doc/*" in command
    assert image.recipe_key() == key


def test_locate_without_buildah_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(image.BaseImageUnavailableError) as error:
        image.locate()
    assert str(error.value) == (
        "buildah and mmdebstrap not found: install Debian's buildah mmdebstrap package(s), "
        "or run `make tools` as root on Debian"
    )


def test_locate_with_an_empty_cache_points_at_make_tools(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(image.BaseImageUnavailableError, match=r"run `make tools`$"):
        image.locate()


def test_base_is_debian_python_with_the_pep_668_marker_and_no_docs() -> None:
    """What the Dockerfile must cope with: Debian's python3, which refuses system installs."""
    try:
        base = image.locate()
    except image.BaseImageUnavailableError as error:
        pytest.fail(f"no local base image: {error}")
    container = base.store.run("from", "--pull-never", base.reference).stdout.strip()
    try:
        script = (
            "python3 -c 'import sys, sysconfig, venv; print(sys.version_info[:2] >= (3, 11)); "
            'print(sysconfig.get_path("stdlib"))\'; '
            "ls /usr/share/doc | wc -l; ls /usr/share/doc/python3 ; ls /usr/share/man | wc -l"
        )
        out = base.store.run("run", container, "--", "sh", "-c", script).stdout.split("\n")
        assert out[0] == "True"
        marker = base.store.run(
            "run", container, "--", "test", "-f", f"{out[1]}/EXTERNALLY-MANAGED"
        )
        assert marker.returncode == 0
        assert int(out[2]) > 0  # the copyright files stay...
        assert out[3] == "copyright"  # ...and only they
        assert out[4] == "0"
    finally:
        subprocess.run(
            base.store.command("rm", container),
            env=base.store.env,
            capture_output=True,
            timeout=120,
            check=False,
        )
