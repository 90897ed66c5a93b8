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


def check_failed_run(res, project, code: str, reason: str, ename: str, evalue: str, max_s: float, took: float):
    """The ending every failure mode must have, whatever the engine: FAILED with its reason and error, the failing cell
    named by its index in the output notebook (banner, parameters, injected parameters, print, the failing cell), the
    output notebook kept with nothing after the failure run, and the MLflow run FAILED. Returns the output notebook."""
    import nbformat
    from mlflow import MlflowClient
    assert took < max_s, f'{reason} took {took:.0f}s'
    assert (res.status, res.reason, res.error.ename) == ('FAILED', reason, ename), res
    assert evalue.lower() in res.error.evalue.lower()
    assert res.error.cell_index == 4
    out = Path(res.output_path)
    assert out.is_file() and out.parent == project/'.mlnb'/'runs'/res.run_id
    onb = nbformat.read(out, as_version=4)
    assert onb.metadata.mlnb.status == 'FAILED' and onb.metadata.mlnb.reason == reason
    assert onb.cells[0].metadata.tags == ['mlnb-error'] and f'FAILED ({reason}) in cell 4' in onb.cells[0].source
    assert onb.cells[3].outputs[0].text == 'before\n'
    assert onb.cells[4].source == code
    assert not onb.cells[5].get('outputs')  # never ran
    assert len(onb.cells) == 6  # nothing else inserted
    run = MlflowClient(res.tracking_uri).get_run(res.run_id)
    assert run.info.status == 'FAILED'
    return onb, run


def free_port() -> int:
    "A TCP port on 127.0.0.1 that nothing listens on now."
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_http(url: str | None, proc=None, port: int | None = None, timeout: float = 90, ok=(200,)) -> int:
    """Wait until `url` answers one of `ok` (or, with no url, until `port` accepts connections); fails at once if `proc`
    exits. Returns the status seen."""
    import socket, time, urllib.error, urllib.request
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc is not None and proc.poll() is not None: raise RuntimeError(f'server exited with {proc.returncode}')
        try:
            if url is None:
                socket.create_connection(('127.0.0.1', port), timeout=2).close(); return 0
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status in ok: return r.status
        except urllib.error.HTTPError as e:
            if e.code in ok: return e.code
        except OSError: pass
        time.sleep(0.2)
    raise TimeoutError(f'{url or port} did not answer in {timeout:.0f}s')


@pytest.fixture(scope='module')
def dask_client():
    "A real two-worker Dask LocalCluster for a test module; closed (cluster included) after it."
    from mlnb.cluster import connect
    client = connect('local', n_workers=2)
    yield client
    client.close()
