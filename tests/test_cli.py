"The `mlnb` command, run as a real subprocess: exit codes, one-line errors, and a light --help."
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port, make_notebook, wait_http


def mlnb(*args, cwd=None, timeout=300):
    return subprocess.run([str(Path(sys.executable).parent/'mlnb'), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_help_imports_nothing_heavy():
    code = ('import sys\nfrom mlnb.cli import main\ntry: main(["--help"])\nexcept SystemExit: pass\n'
            'heavy = [m for m in ("mlflow", "papermill", "dask", "distributed", "great_expectations", "nbclient", "pandas") '
            'if m in sys.modules]\nprint("HEAVY", heavy)')
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert 'HEAVY []' in p.stdout and 'Commands' in p.stdout and 'run' in p.stdout
    code = 'import sys, mlnb; print([m for m in ("mlflow", "papermill", "pydantic") if m in sys.modules])'
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert p.stdout.strip() == '[]'
    # the other modules' command groups are listed with their help, but imported only when run
    code = ('import sys\nfrom mlnb.cli import main\nfrom mlnb.cli.core import LAZY\ntry: main(["--help"])\nexcept SystemExit: pass\n'
            'print("LOADED", sorted({m for m, _, _ in LAZY.values()} & set(sys.modules)))')
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert 'LOADED []' in p.stdout, p.stdout + p.stderr
    from mlnb.cli.core import LAZY
    for name, (_, _, help) in LAZY.items(): assert f'  {name} ' in p.stdout and help.split()[0] in p.stdout


def test_lazy_help_is_the_commands_own():
    "`mlnb --help` shows LAZY's line without loading a command; it must be the first line of the command's own help."
    from mlnb.cli.core import LAZY, load_command
    wrong = []
    for name, (_, _, help) in LAZY.items():
        own = (load_command(name).help or '').strip().split('\n')[0].strip()
        if own != help: wrong.append(f'mlnb {name}: LAZY says {help!r}, the command says {own!r}')
    assert not wrong, '\n'.join(wrong)


def test_every_command_group_loads():
    "Each lazily loaded command answers --help with its own usage line (a missing module or attribute fails here)."
    from mlnb.cli.core import LAZY
    for name in LAZY:
        p = mlnb(name, '--help', timeout=120)
        assert p.returncode == 0 and f'Usage: mlnb {name}' in p.stdout, (name, p.stdout, p.stderr)
    p = mlnb('nosuchcommand')
    assert p.returncode == 2 and 'nosuchcommand' in p.stderr


def test_run_exit_codes_and_messages(project):
    nb = make_notebook(project/'nb.ipynb', 'x: int = 1  # the input\nname = "a"', 'import mlnb\nmlnb.log_metric("y", x * 2)')
    ok = mlnb('run', nb, '-p', 'x', '21', '-p', 'name', '-dash-', cwd=project)
    assert ok.returncode == 0, ok.stderr
    assert 'FINISHED' in ok.stdout and 'y=42' in ok.stdout and '.mlnb/runs/' in ok.stdout

    bad = mlnb('run', nb, '-p', 'x', 'many', cwd=project)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"mlnb: error: {nb}: parameter 'x' expects int, got 'many': not an integer"]
    typo = mlnb('run', nb, '-p', 'xx', '1', cwd=project)
    assert typo.returncode == 2 and "unknown parameter 'xx'; did you mean 'x'?" in typo.stderr
    missing = mlnb('run', project/'nope.ipynb', cwd=project)
    assert missing.returncode == 2 and 'does not exist' in missing.stderr

    failing = make_notebook(project/'fail.ipynb', 'x = 1', 'raise RuntimeError("boom")')
    f = mlnb('run', failing, cwd=project)
    assert f.returncode == 1
    assert 'mlnb: run failed: FAILED (exception) in cell 2: RuntimeError: boom' in f.stderr  # banner, parameters, the cell
    j = mlnb('run', failing, '--json', cwd=project)
    res = json.loads(j.stdout)
    assert j.returncode == 1 and res['status'] == 'FAILED' and res['error']['ename'] == 'RuntimeError'
    assert Path(res['output_path']).is_file()


def test_params_file_and_override(project):
    nb = make_notebook(project/'nb.ipynb', 'a: int = 1\nb: list[str] = []\nday: str = None',
                       'import mlnb\nmlnb.log_metric("s", a + len(b))')
    (project/'p.yaml').write_text('a: 5\nb: [x, y]\nday: "2026-11-22"\n')
    r = mlnb('run', nb, '-f', project/'p.yaml', '-p', 'a', '10', '--json', cwd=project)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)['metrics'] == {'s': 12.0}
    (project/'bad.yaml').write_text('a: "5"\n')
    r = mlnb('run', nb, '-f', project/'bad.yaml', cwd=project)
    assert r.returncode == 2 and "parameter 'a' expects int, got '5'" in r.stderr and "parameter 'day' (str) is required" in r.stderr


def test_params_command(project):
    nb = make_notebook(project/'nb.ipynb', 'rows: int = 100  # how many rows\nday: str = None  # which day')
    r = mlnb('params', nb)
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ['name', 'type', 'default', 'help']
    assert lines[1].split() == ['rows', 'int', '100', 'how', 'many', 'rows']
    assert lines[2].split() == ['day', 'str', 'REQUIRED', 'which', 'day']
    j = json.loads(mlnb('params', nb, '--json').stdout)
    assert j[0] == {'name': 'rows', 'type': 'int', 'default': '100', 'required': False, 'help': 'how many rows'}


def test_runs_list_and_show(project):
    nb = make_notebook(project/'nb.ipynb', 'x = 1', 'import mlnb\nmlnb.log_metric("acc", 0.5)')
    assert mlnb('run', nb, cwd=project).returncode == 0
    lst = mlnb('runs', 'list', cwd=project)
    assert lst.returncode == 0
    row = lst.stdout.splitlines()[1].split()
    assert row[1:3] == ['nb.ipynb', 'FINISHED'] and 'acc=0.5' in lst.stdout
    show = mlnb('runs', 'show', row[0][:8], cwd=project)
    assert show.returncode == 0 and 'acc = 0.5' in show.stdout and 'mlnb.trigger = cli' in show.stdout
    nope = mlnb('runs', 'show', 'ffffffff', cwd=project)
    assert nope.returncode == 2 and "no run with id 'ffffffff'" in nope.stderr


def test_init_refuses_to_overwrite(tmp_path):
    r = mlnb('init', tmp_path/'p')
    assert r.returncode == 0 and (tmp_path/'p'/'mlnb.yaml').is_file()
    (tmp_path/'p'/'mlnb.yaml').write_text('name: mine\n')
    r = mlnb('init', tmp_path/'p')
    assert r.returncode == 2 and 'nothing was written' in r.stderr
    assert (tmp_path/'p'/'mlnb.yaml').read_text() == 'name: mine\n'


def test_config_and_bad_project_file(project, monkeypatch):
    (project/'mlnb.yaml').write_text('name: p\ntimeout: 30\n')
    monkeypatch.setenv('MLNB_START_TIMEOUT', '90')
    r = mlnb('config', cwd=project)
    assert r.returncode == 0
    assert f"timeout = 30.0    # from {project/'mlnb.yaml'}" in r.stdout and 'start_timeout = 90.0    # from environment' in r.stdout
    (project/'mlnb.yaml').write_text('name: p\ntimeout: soon\n')
    nb = make_notebook(project/'nb.ipynb', 'x = 1')
    r = mlnb('run', nb, cwd=project)
    assert r.returncode == 2
    assert f"{project/'mlnb.yaml'}: timeout: Input should be a valid number" in r.stderr


def test_ui_serves_the_project_store(project):
    nb = make_notebook(project/'nb.ipynb', 'x = 1')
    assert mlnb('run', nb, cwd=project).returncode == 0
    port = free_port()
    p = subprocess.Popen([str(Path(sys.executable).parent/'mlnb'), 'ui', '--port', str(port)], cwd=project,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f'http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=10'
    try:
        try: wait_http(url, proc=p, timeout=120)
        except RuntimeError: pytest.fail(f'mlnb ui exited: {p.stdout.read()}')
        with urllib.request.urlopen(url, timeout=10) as r: body = json.load(r)
        assert 'testproj' in [e['name'] for e in body['experiments']]
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/', timeout=10) as r:
            assert r.status == 200 and b'<html' in r.read().lower()
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(30)


def test_sweep_command(project):
    nb = make_notebook(project/'s.ipynb', 'x: int = 1\nmode: Literal["a", "b"] = "a"',
                       'import mlnb\nmlnb.log_metric("y", x * (10 if mode == "b" else 1))')
    nb_src = nb.read_text().replace('"x: int = 1', '"from typing import Literal\\n",\n    "x: int = 1')
    nb.write_text(nb_src)
    r = mlnb('sweep', nb, '--grid', 'x=1,2,3', '--grid', 'mode=a,b', '--metric', 'y', '--engine', 'inprocess',
             '--max-concurrent', '2', cwd=project)
    assert r.returncode == 0, r.stderr
    assert 'sweep: 6/6 points finished' in r.stdout and "best y: 30  {'x': 3, 'mode': 'b'}" in r.stdout
    bad = mlnb('sweep', nb, '--grid', 'x=1,two', cwd=project)
    assert bad.returncode == 2
    assert "point 1 {'x': 'two'}: parameter 'x' expects int, got 'two': not an integer" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    nogrid = mlnb('sweep', nb, cwd=project)
    assert nogrid.returncode == 2 and 'needs a grid or a list of points' in nogrid.stderr


def test_cluster_info_command(project):
    r = mlnb('cluster', 'info', '--cluster', 'local', cwd=project)
    assert r.returncode == 0, r.stderr
    assert 'tcp://127.0.0.1' in r.stdout or 'inproc' in r.stdout or 'worker' in r.stdout.lower()
    bad = mlnb('cluster', 'info', '--cluster', 'tcp://127.0.0.1:1', cwd=project, timeout=120)
    assert bad.returncode == 2 and 'cannot reach' in bad.stderr
