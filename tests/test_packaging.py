"""Guards for the one-namespace layout: every sub-package ships, HF `datasets` is not shadowed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIR: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]
TOP_FOLDERS = ("datasets", "encoders", "fusion", "experiments")


def _python_folders() -> list[Path]:
    """Every folder under the four top-level packages that holds a .py file."""
    found = set()
    for top in TOP_FOLDERS:
        for py in (ROOT / top).rglob("*.py"):
            if "__pycache__" not in py.parts:
                found.add(py.parent.relative_to(ROOT))
    return sorted(found)


def _package_name(folder: Path) -> str:
    parts = folder.parts
    return ".".join(["clinfuse", *parts])


def test_every_python_folder_is_a_listed_package():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    missing = [_package_name(f) for f in _python_folders() if _package_name(f) not in listed]
    assert not missing, f"add these to [tool.setuptools] packages (and package-dir if top level): {missing}"
    for top in TOP_FOLDERS:
        assert PACKAGE_DIR[f"clinfuse.{top}"] == top


def test_every_python_folder_has_an_init():
    lacking = [str(f) for f in _python_folders() if not (ROOT / f / "__init__.py").exists()]
    assert not lacking, f"folders without __init__.py: {lacking}"


def test_wheel_contains_every_module(tmp_path):
    """Build the wheel (no isolation: uses the installed setuptools) and compare its file list."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("clinfuse-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "clinfuse/" + str(py.relative_to(ROOT))
        for top in TOP_FOLDERS
        for py in (ROOT / top).rglob("*.py")
        if "__pycache__" not in py.parts
    }
    assert expected - names == set(), f"missing from the wheel: {sorted(expected - names)}"
    assert "clinfuse/experiments/quickstart.yaml" in names
    assert not any(n.startswith(("datasets/", "fusion/", "encoders/", "experiments/")) for n in names)


def test_clinfuse_subpackages_import_from_this_checkout():
    import clinfuse.datasets
    import clinfuse.encoders
    import clinfuse.experiments
    import clinfuse.fusion

    for mod, top in [(clinfuse.datasets, "datasets"), (clinfuse.encoders, "encoders"),
                     (clinfuse.fusion, "fusion"), (clinfuse.experiments, "experiments")]:
        assert Path(mod.__file__).resolve() == ROOT / top / "__init__.py"


def test_huggingface_datasets_is_not_shadowed():
    if importlib.util.find_spec("datasets") is None:
        pytest.skip("HuggingFace datasets is not installed")
    import datasets

    assert Path(datasets.__file__).resolve().parent != ROOT / "datasets", (
        f"`import datasets` resolved to this repository's folder ({datasets.__file__}); the repo root is on sys.path"
    )
    assert "site-packages" in Path(datasets.__file__).parts
    assert hasattr(datasets, "load_dataset")


def test_console_script_runs_from_the_repo_root():
    """Users run `clinfuse` from the checkout; the script must find clinfuse.* from there."""
    script = Path(sys.executable).parent / "clinfuse"
    assert script.exists(), "the clinfuse console script is not installed"
    proc = subprocess.run([str(script), "synth", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--patients" in proc.stdout
