"""Check counts are derived from the manifest, and README says the same numbers.

Each suite module's checks are its ``test_*`` functions, each multiplied by
the number of manifest entries of every manifest-driven argument it takes
(``service``, ``app``, ``endpoint``... see bizosaas_acceptance/params.py). The
formula is computed here from the manifest and the API description by reading
the modules' source (not by collecting them), and compared with what pytest
collects and with README's "Check counts" line.
"""

from __future__ import annotations

import ast
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bizosaas_acceptance.labels import SUITES
from bizosaas_acceptance.model.manifest import load_manifest
from bizosaas_acceptance.params import PARAMETERS

ROOT = Path(__file__).resolve().parent.parent


def expected_counts() -> dict[str, int]:
    """suite → number of checks, from the manifest and the modules' signatures."""
    stack = load_manifest(None)
    sizes = {name: len(make(stack)) for name, make in PARAMETERS.items()}
    counts: dict[str, int] = {}
    for suite in SUITES:
        tree = ast.parse((ROOT / "tests" / f"test_{suite}.py").read_text())
        total = 0
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                args = [a.arg for a in node.args.args]
                # A manifest argument with no entries still yields one (skipped) check.
                total += math.prod(max(1, sizes[a]) for a in args if a in sizes)
        counts[suite] = total
    return counts


def collected_counts() -> dict[str, int]:
    out = subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:html",
                          "-o", "addopts=", "-p", "no:cacheprovider"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    counts = dict.fromkeys(SUITES, 0)
    for line in out.stdout.splitlines():
        m = re.match(r"tests/test_(\w+)\.py::", line)
        if m and m.group(1) in counts:
            counts[m.group(1)] += 1
    return counts


@pytest.fixture(scope="module")
def expected() -> dict[str, int]:
    return expected_counts()


def test_collection_equals_the_manifest_formula(expected: dict[str, int]) -> None:
    assert collected_counts() == expected


def test_readme_states_the_derived_counts(expected: dict[str, int]) -> None:
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"\*\*Check counts\*\* on the reference stack \(`pytest -n auto`\): "
                  r"(\d+) checks —\s*(.*?);", readme, re.S)
    assert m, "README lost its 'Check counts' line"
    stated = {name: int(n) for name, n in re.findall(r"(\w+) (\d+)", m.group(2))}
    assert stated == expected, f"README says {stated}, the manifest gives {expected}"
    assert int(m.group(1)) == sum(expected.values())


def test_no_schema_check_where_none_is_documented(tmp_path: Path) -> None:
    """An endpoint documenting no body schema has no test_schema check (one that
    could only pass); its other checks stay."""
    import yaml

    from bizosaas_acceptance.model.manifest import DEFAULT_MANIFEST

    api = yaml.safe_load((ROOT / "stacks" / "api" / "bizosaas-staging.yaml").read_text())
    ep = next(e for e in api["services"]["django-crm"]["endpoints"]
              if e["path"] == "/api/clients/" and e.get("method", "GET") == "GET")
    ep.pop("schema")
    (tmp_path / "api.yaml").write_text(yaml.safe_dump(api, sort_keys=False))
    doc = yaml.safe_load(DEFAULT_MANIFEST.read_text())
    doc["api"] = str(tmp_path / "api.yaml")
    (tmp_path / "stack.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    out = subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:html",
                          "-o", "addopts=", "-p", "no:cacheprovider",
                          f"--stack={tmp_path / 'stack.yaml'}", "tests/test_api.py"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    ids = out.stdout.splitlines()
    assert "tests/test_api.py::test_status[django-crm-GET-/api/clients/]" in ids
    assert "tests/test_api.py::test_schema[django-crm-GET-/api/clients/]" not in ids
    assert "tests/test_api.py::test_schema[django-crm-GET-/api/contacts/]" in ids
