"Every way a notebook can fail ends FAILED with its reason, in bounded time, with the output notebook kept."
import time
from pathlib import Path

import nbformat
import pytest
from conftest import check_failed_run, make_notebook
from mlflow import MlflowClient

import mlnb

ENGINES = ('kernel', 'inprocess')

# case: (the failing cell, reason, ename, evalue, {engine: why it does not apply}); both engines end every case the same way
FAILURES = {
    'exception': ('raise ValueError("bad row 7")', 'exception', 'ValueError', 'bad row 7', {}),
    'sys_exit': ('import sys\nsys.exit(1)', 'exit', 'SystemExit', '1', {}),
    'sys_exit_message': ('import sys\nsys.exit("no data")', 'exit', 'SystemExit', 'no data', {}),
    'line_magic': ('%this_magic_does_not_exist 1', 'exception', 'UsageError',
                   'Line magic function `%this_magic_does_not_exist` not found', {}),
    'syntax': ('def f(:\n    pass', 'exception', 'SyntaxError', 'invalid syntax', {}),
    'kernel_death': ('import os\nos._exit(1)', 'kernel_died', 'DeadKernelError', 'kernel died',
                     {'inprocess': 'os._exit in the inprocess engine ends the process that runs it: there is no kernel to die'}),
    'cell_timeout': ('import time\ntime.sleep(120)', 'timeout', 'CellTimeoutError', 'timeout of 3 s', {}),
    'timeout_not_caught': ('import time\ntry:\n    time.sleep(120)\nexcept Exception:\n    print("caught")', 'timeout',
                           'CellTimeoutError', 'timeout of 3 s', {}),
}
MAX_S = {'kernel': 60, 'inprocess': 30}  # a failure ends in bounded time (a kernel takes longer to start and stop)


def _failure_params():
    for case, (*_, skip) in FAILURES.items():
        for engine in ENGINES:
            marks = [pytest.mark.skip(reason=skip[engine])] if engine in skip else []
            yield pytest.param(engine, case, marks=marks, id=f'{engine}-{case}')


@pytest.mark.parametrize('engine,case', list(_failure_params()))
def test_failure_modes(project, engine, case):
    code, reason, ename, evalue, _ = FAILURES[case]
    nb = make_notebook(project/f'{case}.ipynb', 'x = 1', 'print("before")', code, 'print("never")')
    t = time.time()
    res = mlnb.run(nb, {'x': 2}, timeout=3, engine=engine)
    onb, run = check_failed_run(res, project, code, reason, ename, evalue, max_s=MAX_S[engine], took=time.time() - t)
    assert not any(o.get('text') == 'caught\n' for o in onb.cells[4].outputs)  # a timeout is not an Exception to catch
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
