"""Quiet output: `mlnb run` and `mlnb sweep`, typed in a fresh project, print mlnb's own lines, not the notices and INFO
logs of the tools underneath (debugpy's frozen-modules notice from the kernels' fork server, MLflow's lines about
creating its tables); `--verbose` shows MLflow's logging. Each command is a real process of the venv's `mlnb`."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
NOISE = ('Debugger warning', 'frozen modules', 'PYDEVD_DISABLE_FILE_VALIDATION', 'Creating initial MLflow database tables',
         'Updating database tables', 'alembic', ' INFO ')
NOTEBOOK = {'cells': [{'cell_type': 'code', 'execution_count': None, 'id': 'p', 'metadata': {'tags': ['parameters']},
                       'outputs': [], 'source': 'x = 1'},
                      {'cell_type': 'code', 'execution_count': None, 'id': 'b', 'metadata': {}, 'outputs': [],
                       'source': 'import mlnb\nmlnb.log_metric("y", x + 1)'}],
            'metadata': {'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}},
            'nbformat': 4, 'nbformat_minor': 5}


def project(tmp_path: Path, name: str) -> Path:
    "A new project folder (no store yet) holding `trivial.ipynb`."
    d = tmp_path/name
    d.mkdir()
    (d/'mlnb.yaml').write_text(f'name: {name}\n')
    (d/'trivial.ipynb').write_text(json.dumps(NOTEBOOK))
    return d


def mlnb(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    "`mlnb ARGS` as a user types it in `cwd`."
    env = {k: v for k, v in os.environ.items() if k not in ('MLNB_VERBOSE', 'PYDEVD_DISABLE_FILE_VALIDATION', 'MLFLOW_LOGGING_LEVEL')}
    env['MLFLOW_DISABLE_TELEMETRY'] = 'true'
    return subprocess.run([str(BIN/'mlnb'), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def noise(stderr: str) -> list:
    return [line for line in stderr.replace('\r', '\n').splitlines() if any(n in line for n in NOISE)]


def test_run_prints_only_its_own_lines(tmp_path):
    p = mlnb(project(tmp_path, 'quiet'), 'run', 'trivial.ipynb', '-p', 'x', '2')
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith('FINISHED') and 'metrics: y=3' in p.stdout, p.stdout
    assert noise(p.stderr) == [], p.stderr


def test_sweep_prints_only_its_own_lines(tmp_path):
    "The kernel engine: each worker's fork server imports debugpy, which printed its notice."
    p = mlnb(project(tmp_path, 'quiet-sweep'), 'sweep', 'trivial.ipynb', '--grid', 'x=1,2')
    assert p.returncode == 0, p.stdout + p.stderr
    assert 'sweep: 2/2 points finished' in p.stdout, p.stdout
    assert noise(p.stderr) == [], p.stderr
    assert all(line.startswith('sweep:') for line in p.stderr.replace('\r', '\n').splitlines() if line.strip()), p.stderr


@pytest.mark.parametrize('command', [['run', 'trivial.ipynb'], ['sweep', 'trivial.ipynb', '--grid', 'x=1', '--engine', 'inprocess']])
def test_verbose_shows_mlflow_logging(tmp_path, command):
    p = mlnb(project(tmp_path, 'loud'), *command, '--verbose')
    assert p.returncode == 0, p.stdout + p.stderr
    assert 'INFO mlflow.store.db.utils: Creating initial MLflow database tables' in p.stderr, p.stderr
