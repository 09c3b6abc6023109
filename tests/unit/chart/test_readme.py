"""The chart README documents every value and points at files that exist."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml

from tests.unit.chart.helm import CHART

README = (CHART / "README.md").read_text()


def leaf_paths(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of the values a user sets (maps of free keys count as one value)."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in ("requests", "limits"):
            yield from leaf_paths(value, f"{path}.")
        else:
            yield path


def test_every_value_has_a_row_in_the_values_table() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    section = README[README.index("\n## Values\n"):]
    section = section[:section.index("\n## ", 1)]
    documented = set(re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", section, re.M))
    missing = [path for path in leaf_paths(values) if path not in documented]
    assert not missing, f"charts/tablesync/README.md does not document {missing}"
    unknown = documented - set(leaf_paths(values))
    assert not unknown, f"README documents values that do not exist: {sorted(unknown)}"


def test_relative_links_point_at_files_that_exist() -> None:
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README):
        assert (CHART / target).exists(), f"README links to missing {target}"


def test_argocd_snippet_names_the_health_check_key_and_the_shipped_lua() -> None:
    assert "resource.customizations.health.tablesync.dev_TableSync" in README
    assert (CHART / "docs" / "argocd-health.lua").is_file()
