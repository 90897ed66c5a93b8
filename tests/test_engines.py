"The `inprocess` engine against the `kernel` engine: same outputs, metrics and endings; the process is left as it was found."
import os
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
from conftest import make_notebook
from mlflow import MlflowClient

import mlnb
from mlnb.execute import RunRequest, engines


def _strip(s: str) -> str:
    import re
    return re.sub(r'\x1b\[[0-9;]*[A-Za-z]', '', s)


def outputs(path) -> list:
    "Per cell: (execution_count, [(output_type, stream name, the text that matters)])."
    nb = nbformat.read(path, as_version=4)
    cells = []
    for c in nb.cells:
        if c.cell_type != 'code': continue
        outs = []
        for o in c.get('outputs', []):
            if o.output_type == 'stream': outs.append(('stream', o.name, o.text))
            elif o.output_type == 'error': outs.append(('error', o.ename, o.evalue))
            else: outs.append((o.output_type, tuple(sorted(o.data)), o.data.get('text/plain')))
        cells.append((c.get('execution_count'), outs))
    return cells


SAME = {
    'streams': ('print("a")\nimport sys\nprint("e", file=sys.stderr)\nprint("b")', 'x * 2', 'x;', '',
                'for i in range(3): print(i, end=" ")', 'print("out")\nprint("err", file=sys.stderr, flush=True)\nprint("out2")'),
    'rich': ('import pandas as pd\ndf = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})\ndisplay(df)\nprint("after")\ndf',
             'from IPython.display import Markdown, HTML\ndisplay(Markdown("**hi**"), HTML("<b>b</b>"))', '"text"'),
    'plot': ('import matplotlib.pyplot as plt\nplt.plot([1, 2, 3]);', 'fig, ax = plt.subplots()\nax.bar([1, 2], [3, 4])\nplt.show()'),
    'metrics': ('import mlnb\nfor step in range(3): mlnb.log_metric("loss", 1 / (step + x), step=step)',
                'mlnb.log_metrics({"acc": 0.5 + x / 10, "n": 3})\nprint("logged")'),
    'async': ('import asyncio\nawait asyncio.sleep(0.01)\nprint("awaited")', '!echo shell'),
    'input': ('print("asking")', 'name = input("name? ")'),
    'exit0': ('print("before")', 'import sys\nsys.exit(0)', 'print("never")'),
    'exception': ('print("before")', 'import mlnb\nmlnb.log_metric("partial", 1)\nraise KeyError("k")', 'print("never")'),
}


@pytest.mark.parametrize('case', list(SAME))
def test_same_as_kernel(project, case):
    nb = make_notebook(project/f'{case}.ipynb', 'x = 1', *SAME[case])
    res = {e: mlnb.run(nb, {'x': 2}, engine=e) for e in ('kernel', 'inprocess')}
    k, i = res['kernel'], res['inprocess']
    assert (i.status, i.reason) == (k.status, k.reason), (k.summary(), i.summary())
    def err(r): return r.error and (r.error.ename, r.error.evalue, r.error.cell_index)
    assert err(i) == err(k)
    assert i.metrics == k.metrics
    assert outputs(i.output_path) == outputs(k.output_path)
    ko, io = nbformat.read(k.output_path, as_version=4), nbformat.read(i.output_path, as_version=4)
    assert [c.source for c in io.cells] == [c.source for c in ko.cells]
    assert io.metadata.language_info.name == 'python' and io.metadata.mlnb.status == k.status
    client = MlflowClient(i.tracking_uri)
    ik, ii = client.get_run(k.run_id), client.get_run(i.run_id)
    assert ii.info.status == ik.info.status and ii.data.params == ik.data.params
    if case == 'metrics':
        assert i.metrics == {'loss': pytest.approx(1 / 4), 'acc': pytest.approx(0.7), 'n': 3.0}
        assert [m.value for m in client.get_metric_history(i.run_id, 'loss')] == pytest.approx([1 / 2, 1 / 3, 1 / 4])
    if case == 'plot':  # figures inline, also when pyplot is already imported in the process (by the Run above)
        again = mlnb.run(nb, {'x': 2}, engine='inprocess')
        assert outputs(again.output_path) == outputs(k.output_path)
        figs = [o for c in io.cells for o in c.get('outputs', []) if 'image/png' in o.get('data', {})]
        assert len(figs) == 2 and all(f.data['image/png'].startswith('iVBOR') for f in figs)  # base64 PNG
    if case == 'rich':
        df = io.cells[2].outputs[0]
        assert df.output_type == 'display_data' and {'text/plain', 'text/html'} <= set(df.data)


def test_traceback_like_kernel(project):
    nb = make_notebook(project/'tb.ipynb', 'x = 1', 'def f(y):\n    return y / 0', 'f(x)')
    k, i = (mlnb.run(nb, {'x': 2}, engine=e) for e in ('kernel', 'inprocess'))
    assert i.error.ename == k.error.ename == 'ZeroDivisionError'
    for line in ('Cell In[4], line 1', '----> 1 f(x)', 'Cell In[3], line 2, in f(y)', 'ZeroDivisionError: division by zero'):
        assert line in i.error.traceback and line in k.error.traceback, line


# The failure modes, one test over both engines: tests/test_execute.py::test_failure_modes.


def test_sys_exit_zero_is_success(project):
    nb = make_notebook(project/'exit0.ipynb', 'x = 1', 'import sys\nsys.exit()', 'print("never")')
    res = mlnb.run(nb, {'x': 2}, engine='inprocess')
    assert res.ok and res.reason == '' and res.error is None
    assert not nbformat.read(res.output_path, as_version=4).cells[3].outputs


def test_timeout_off_main_thread(project):
    "On a worker thread the watchdog raises between bytecodes: a loop of short sleeps stops, a single long C call would not."
    nb = make_notebook(project/'loop.ipynb', 'x = 1', 'import time\nfor _ in range(6000): time.sleep(0.01)', 'print("never")')
    box = {}
    th = threading.Thread(target=lambda: box.setdefault('res', mlnb.run(nb, {'x': 2}, timeout=2, engine='inprocess')))
    t = time.time()
    th.start()
    th.join(60)
    res = box['res']
    assert time.time() - t < 30
    assert (res.status, res.reason, res.error.ename, res.error.cell_index) == ('FAILED', 'timeout', 'CellTimeoutError', 3)


def test_not_python(project):
    nb = make_notebook(project/'r.ipynb', None, 'x <- 1')
    raw = nbformat.read(nb, as_version=4)
    raw.metadata.kernelspec = {'name': 'ir', 'display_name': 'R', 'language': 'R'}
    nbformat.write(raw, nb)
    res = mlnb.run(nb, engine='inprocess')
    assert (res.status, res.reason, res.error.ename) == ('FAILED', 'no_such_kernel', 'NoSuchKernel')
    assert 'Python notebooks only' in res.error.evalue and "'R'" in res.error.evalue
    assert Path(res.output_path).is_file()


def test_unknown_kernel_name_is_ignored(project):
    nb = make_notebook(project/'k.ipynb', 'x = 1', 'print(x)', kernel='julia-9.9')
    res = mlnb.run(nb, {'x': 3}, kernel='no-such-kernel', engine='inprocess')
    assert res.ok, res.summary()
    assert nbformat.read(res.output_path, as_version=4).cells[2].outputs[0].text == '3\n'


def test_process_restored(project):
    (project/'nbs').mkdir()
    (project/'nbs'/'helper.py').write_text('VALUE = 7\n')
    nb = make_notebook(project/'nbs'/'env.ipynb', 'db_password = "x"\nn = 1',
                       'import os, sys, helper\n'
                       'print(os.getcwd() == os.path.dirname(os.path.abspath("env.ipynb")), helper.VALUE, sys.path[0] == os.getcwd())\n'
                       'print(db_password, "MLNB_SECRET_DB_PASSWORD" in os.environ, os.environ["MLNB_RUN_ID"] != "")',
                       'os.environ["LEAKED"] = "1"\nos.chdir("/")\nsys.path.append("/leaked")\nsys.argv.append("--leak")',
                       'raise RuntimeError("fail after changing everything")')
    env, cwd, path, argv = dict(os.environ), os.getcwd(), list(sys.path), list(sys.argv)
    stdout, stderr, main = sys.stdout, sys.stderr, sys.modules['__main__']
    res = mlnb.run(nb, {'db_password': 'hunter2', 'n': 2}, engine='inprocess')
    assert res.reason == 'exception' and res.error.ename == 'RuntimeError'
    out = nbformat.read(res.output_path, as_version=4)
    assert out.cells[3].outputs[0].text == 'True 7 True\nhunter2 False True\n'  # popped by the injected cell, as in a kernel
    assert Path(res.output_path).read_text().count('hunter2') == 1  # only where the notebook printed it
    assert dict(os.environ) == env and 'MLNB_SECRET_DB_PASSWORD' not in os.environ and 'MLNB_RUN_ID' not in os.environ
    assert os.getcwd() == cwd and sys.path == path and sys.argv == argv
    assert (sys.stdout, sys.stderr, sys.modules['__main__']) == (stdout, stderr, main)
    from IPython.core.interactiveshell import InteractiveShell
    assert type(InteractiveShell._instance).__name__ != 'RunShell'


def test_runs_take_turns(project):
    "Two inprocess Runs in one process, from two threads: each sees only its own environment and folder."
    nbs = []
    for name in ('a', 'b'):
        nbs.append(make_notebook(project/name/f'{name}.ipynb', 'x = 1',
                                 'import os, time\nstart = (os.getcwd(), os.environ["MLNB_RUN_ID"])\ntime.sleep(0.5)\n'
                                 'print(os.path.basename(os.getcwd()), (os.getcwd(), os.environ["MLNB_RUN_ID"]) == start)'))
    results = {}
    ths = [threading.Thread(target=lambda p=p: results.setdefault(p.stem, mlnb.run(p, {'x': 2}, engine='inprocess'))) for p in nbs]
    for t in ths: t.start()
    for t in ths: t.join(60)
    for name in ('a', 'b'):
        assert results[name].ok, results[name].summary()
        assert nbformat.read(results[name].output_path, as_version=4).cells[2].outputs[0].text == f'{name} True\n'


def test_faster_than_kernel(project):
    nb = make_notebook(project/'trivial.ipynb', 'x = 1', 'print(x + 1)')
    times = {}
    for e in ('kernel', 'inprocess'):
        engine = engines.get(e)()
        engine.run(RunRequest(str(nb), {'x': 2}, engine=e), project/'warm'/f'{e}.ipynb')  # imports, first kernel start
        t = time.perf_counter()
        for n in range(3): assert engine.run(RunRequest(str(nb), {'x': 2}, engine=e), project/'out'/f'{e}{n}.ipynb').ok
        times[e] = (time.perf_counter() - t) / 3
    t = time.perf_counter()
    full = {e: (mlnb.run(nb, {'x': 2}, engine=e), time.perf_counter())[1] for e in ('kernel', 'inprocess')}
    full = {'kernel': full['kernel'] - t, 'inprocess': full['inprocess'] - full['kernel']}
    print(f"\nper Run, engine only: kernel {times['kernel']*1000:.0f} ms, inprocess {times['inprocess']*1000:.0f} ms "
          f"({times['kernel']/times['inprocess']:.0f}x); mlnb.run with MLflow: kernel {full['kernel']*1000:.0f} ms, "
          f"inprocess {full['inprocess']*1000:.0f} ms")
    assert times['inprocess'] < times['kernel']
