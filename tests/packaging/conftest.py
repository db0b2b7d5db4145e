"""Packaging tests: what a user installs and deploys (the wheel, the manifests, the Dockerfile).

They build things (a wheel, kustomize from the Go module proxy) and so are slower than unit
tests; every test here carries the ``packaging`` marker (``pytest -m packaging`` runs them alone,
``-m "not packaging"`` skips them while iterating). CI runs them with everything else.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.packaging)
