"""Fixtures of the chart tests: the chart loaded once by helm-python-sdk, a render function, promtool.

Everything is rendered by Helm's own engine and checked by real engines (kubernetes-validate, jsonschema,
promtool, hadolint); nothing here matches YAML text. promtool comes from the Debian `prometheus` package
(`make system-deps`); without it the tests fail rather than skip. Helpers live in chart_support.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import helm_python
import pytest
from chart_support import CHART, NAMESPACE, Manifest, render_objects, require_tool


@pytest.fixture(scope="session")
def chart() -> Iterator[helm_python.Chart]:
    loaded = helm_python.Chart.load(CHART)
    try:
        yield loaded
    finally:
        loaded.close()


@pytest.fixture(scope="session")
def render(chart: helm_python.Chart) -> Callable[..., list[Manifest]]:
    """render(values, namespace=…) → the parsed manifests of `helm template` with those values."""

    def _render(values: dict[str, Any], *, namespace: str = NAMESPACE) -> list[Manifest]:
        return render_objects(chart, values, namespace=namespace)

    return _render


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool")
