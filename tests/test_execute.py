"Every way a notebook can fail ends FAILED with its reason, in bounded time, with the output notebook kept."
import time
from pathlib import Path

import nbformat
import pytest
from conftest import check_failed_run, make_notebook
from mlflow import MlflowClient

import mlnb

CASES = {
    'exception': ('raise ValueError("bad row 7")', 'exception', 'ValueError', 'bad row 7'),
    'sys_exit': ('import sys\nsys.exit(1)', 'exit', 'SystemExit', '1'),
    'line_magic': ('%this_magic_does_not_exist 1', 'exception', 'UsageError', 'this_magic_does_not_exist'),
    'kernel_death': ('import os\nos._exit(1)', 'kernel_died', 'DeadKernelError', 'kernel died'),
    'cell_timeout': ('import time\ntime.sleep(120)', 'timeout', 'CellTimeoutError', 'timeout of 3 s'),
}


@pytest.mark.parametrize('case', list(CASES))
def test_failure_modes(project, case):
    code, reason, ename, evalue = CASES[case]
    nb = make_notebook(project/f'{case}.ipynb', 'x = 1', 'print("before")', code, 'print("never")')
    t = time.time()
    res = mlnb.run(nb, {'x': 2}, timeout=3)
    _, run = check_failed_run(res, project, code, reason, ename, evalue, max_s=60, took=time.time() - t)
    assert run.data.tags['mlnb.reason'] == reason and run.data.tags['mlnb.error.ename'] == ename
    assert run.data.tags['mlnb.error.cell'] == '4'


def test_unknown_kernel(project):
    nb = make_notebook(project/'k.ipynb', 'x = 1', 'print(x)')
    t = time.time()
    res = mlnb.run(nb, kernel='no-such-kernel')
    assert time.time() - t < 30
    assert (res.status, res.reason) == ('FAILED', 'no_such_kernel')
    assert "no kernel named 'no-such-kernel'" in res.error.evalue and 'python3' in res.error.evalue
    assert Path(res.output_path).is_file()
    assert MlflowClient(res.tracking_uri).get_run(res.run_id).info.status == 'FAILED'


def test_kernel_from_notebook_metadata_unknown(project):
    nb = make_notebook(project/'k2.ipynb', 'x = 1', 'print(x)', kernel='julia-9.9')
    res = mlnb.run(nb)
    assert res.reason == 'no_such_kernel' and 'julia-9.9' in res.error.evalue


def test_success_cwd_and_outputs(project):
    (project/'data').mkdir()
    (project/'data'/'in.txt').write_text('42')
    nb = make_notebook(project/'nbs'/'read.ipynb', 'path = "../data/in.txt"',
                       'import os\nvalue = int(open(path).read())\nprint(value, os.getcwd())')
    res = mlnb.run(nb)
    assert res.ok, res.summary()
    out = nbformat.read(res.output_path, as_version=4)
    assert out.cells[1].outputs[0].text == f"42 {project/'nbs'}\n"  # cwd is the notebook's folder (no parameters: no injected cell)
    res2 = mlnb.run(nb, {'path': 'data/in.txt'}, cwd=project)
    assert res2.ok and f'42 {project}\n' == nbformat.read(res2.output_path, as_version=4).cells[2].outputs[0].text
    assert res.run_id != res2.run_id and res.duration > 0


def test_input_notebook_untouched(project):
    nb = make_notebook(project/'u.ipynb', 'x = 1', 'x / 0')
    before = nb.read_bytes()
    res = mlnb.run(nb, {'x': 5})
    assert not res.ok and nb.read_bytes() == before
