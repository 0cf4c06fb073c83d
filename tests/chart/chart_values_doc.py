"""Reads the documentation comments of charts/credit-jobs/values.yaml (helm-docs style `# -- text` above a key).

Used by test_chart_values.py to check that every key is commented and that the values reference table in
docs/install.md lists exactly the documented keys with their defaults and descriptions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class DocumentedKey:
    path: str  # dotted, e.g. "operator.watch.clusterWide"
    default: Any
    description: str


def key_lines(values_file: Path) -> list[tuple[str, int]]:
    """Every mapping key of the file as (dotted path, 0-based line), found by YAML's composer (not by regex)."""
    root = yaml.compose(values_file.read_text())
    found: list[tuple[str, int]] = []

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                path = f"{prefix}.{key.value}" if prefix else key.value
                found.append((path, key.start_mark.line))
                walk(value, path)

    assert root is not None
    walk(root, "")
    return found


def _comment_block_above(lines: list[str], line: int) -> list[str]:
    block: list[str] = []
    index = line - 1
    while index >= 0 and lines[index].strip().startswith("#"):
        block.insert(0, lines[index].strip())
        index -= 1
    return block


def documented_keys(values_file: Path) -> list[DocumentedKey]:
    """Keys whose comment block starts with `# --`: the values reference (each is a leaf or a whole object)."""
    lines = values_file.read_text().splitlines()
    values = yaml.safe_load(values_file.read_text())
    documented = []
    for path, line in key_lines(values_file):
        block = _comment_block_above(lines, line)
        starts = [i for i, text in enumerate(block) if text.startswith("# --")]
        if not starts:
            continue
        text = " ".join(part.lstrip("#").strip() for part in block[starts[-1] :])
        default: Any = values
        for part in path.split("."):
            default = default[part]
        documented.append(DocumentedKey(path, default, text.removeprefix("--").strip()))
    return documented


def commented(values_file: Path) -> dict[str, bool]:
    """For each key: is there a comment directly above it (a `# --` doc or a section comment)?"""
    lines = values_file.read_text().splitlines()
    return {path: bool(_comment_block_above(lines, line)) for path, line in key_lines(values_file)}


def render_default(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "))
