"Shared helpers: tiny notebooks written with nbformat, and a fresh project folder per test."
import os
import sys
from pathlib import Path

import nbformat
import pytest

os.environ.setdefault('MLFLOW_DISABLE_TELEMETRY', 'true')
BIN = Path(sys.executable).parent
os.environ['PATH'] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"  # the venv's `mlnb`, `mlflow` and `jupyter`
IN_CI = os.environ.get('CI', '').lower() in ('1', 'true', 'yes')


def make_notebook(path, params: str | None, *cells: str, kernel='python3') -> Path:
    "Write a notebook: an optional `parameters` cell, then code cells."
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': {'name': kernel, 'display_name': kernel, 'language': 'python'}})
    if params is not None: nb.cells.append(nbformat.v4.new_code_cell(params, metadata={'tags': ['parameters']}))
    nb.cells += [nbformat.v4.new_markdown_cell(c[3:]) if c.startswith('md:') else nbformat.v4.new_code_cell(c) for c in cells]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    "A fresh project folder (with mlnb.yaml) as the working directory; no site settings or MLNB_* leaking in."
    for k in list(os.environ):
        if k.startswith('MLNB_') or k in ('MLFLOW_TRACKING_URI', 'MLFLOW_RUN_ID', 'MLFLOW_EXPERIMENT_ID'): monkeypatch.delenv(k)
    p = tmp_path/'proj'
    p.mkdir()
    (p/'mlnb.yaml').write_text('name: testproj\n')
    monkeypatch.chdir(p)
    return p


def need(component: str, available: bool, why: str):
    "Skip when a component is missing, except in CI, where it must be there."
    if available: return
    if IN_CI: pytest.fail(f'{component} is required in CI: {why}')
    pytest.skip(f'{component} not available: {why}')
