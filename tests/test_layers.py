"""The architecture holds: layers import one way and no cycles (import-linter), public helpers are public, notebooks
use the package, every top-level folder is in the import contract."""

import ast
import glob
import json
import os
import subprocess
import sys

from contract.config import REPO_ROOT

PACKAGES = ("contract", "formats", "schemas", "models", "training", "validation", "edge", "components", "pipeline",
            "serving", "monitoring", "batch", "deploy", "reports", "fleet", "runners", "cli", "bench")


def test_import_contracts_hold():
    """.importlinter: the layer order, a TensorFlow-free contract and device runtime, a light gRPC client."""
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    result = subprocess.run([lint, "--config", os.path.join(REPO_ROOT, ".importlinter"), "--no-cache"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout and "0 broken" in result.stdout


def _sources(folders=PACKAGES + ("tests",)):
    for folder in folders:
        yield from glob.glob(os.path.join(REPO_ROOT, folder, "**", "*.py"), recursive=True)


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for path in _sources():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                offenders += [f"{os.path.relpath(path, REPO_ROOT)}:{node.lineno} {node.module}.{a.name}"
                              for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not offenders, offenders


def test_notebooks_import_the_package_not_test_helpers_or_paths():
    for path in glob.glob(os.path.join(REPO_ROOT, "notebooks", "*.ipynb")):
        with open(path, encoding="utf-8") as f:
            code = "\n".join("".join(c["source"]) for c in json.load(f)["cells"] if c["cell_type"] == "code")
        assert "from tests" not in code and "import tests" not in code, path
        assert "sys.path" not in code and "TF_USE_LEGACY_KERAS" not in code, path


def test_no_module_edits_the_import_path_or_sets_keras_at_import():
    """The package is installed (pip install -e .); entry points call cli.prologue.prepare()."""
    offenders = []
    for path in _sources(PACKAGES):
        if path.endswith(os.path.join("cli", "prologue.py")):
            continue
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for needle in ("sys.path.insert", "sys.path.append", 'environ["PYTHONPATH"]', "PYTHONPATH=",
                       'setdefault("TF_USE_LEGACY_KERAS"'):
            if needle in text:
                offenders.append(f"{os.path.relpath(path, REPO_ROOT)}: {needle}")
    assert not offenders, offenders


def test_every_package_is_in_the_import_contract_and_the_distribution():
    """A new top-level package that the layers do not name would escape the layer check."""
    import configparser

    found = sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(REPO_ROOT, "*", "__init__.py"))
                   if os.path.basename(os.path.dirname(p)) != "tests")
    lint = configparser.ConfigParser()
    lint.read(os.path.join(REPO_ROOT, ".importlinter"))
    roots = lint["importlinter"]["root_packages"].split()
    assert sorted(roots) == found, (roots, found)
    assert sorted(PACKAGES) == found


def test_the_distribution_installs_every_package():
    """A package missing from pyproject.toml imports in the checkout (editable) but not in the image."""
    from setuptools.config.pyprojecttoml import read_configuration

    listed = set(read_configuration(os.path.join(REPO_ROOT, "pyproject.toml"))["tool"]["setuptools"]["packages"])
    found = {os.path.relpath(os.path.dirname(p), REPO_ROOT).replace(os.sep, ".")
             for folder in PACKAGES if folder != "bench"  # benchmarks run from the checkout, not installed
             for p in glob.glob(os.path.join(REPO_ROOT, folder, "**", "__init__.py"),
                                                        recursive=True)}
    assert found - listed == set(), f"packages not in pyproject.toml: {sorted(found - listed)}"
