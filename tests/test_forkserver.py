"""Kernels forked from the per-process fork server: one new process per Run, nothing shared between Runs, same results as
kernels started with Popen, and a server that dies is replaced."""
import json
import os
import signal
import time

import psutil
import pytest
from conftest import make_notebook

import mlnb
from mlnb import forkserver

pytestmark = pytest.mark.skipif(not forkserver.enabled() and not os.environ.get('MLNB_KERNEL_FORK'),
                                reason='fork server needs Linux with pidfd')

PROBE = ('import os, sys, json, random\n'
         'mark = getattr(json, "mlnb_mark", None)\n'
         'json.mlnb_mark = x\n'  # a module mutated by this Run must not be seen by the next
         'print(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "mark": mark, "rand": random.random(),'
         ' "cwd": os.getcwd(), "probe": os.environ.get("MLNB_PROBE"), "sid": os.getsid(0)}))')


def probe(res) -> dict:
    import nbformat
    nb = nbformat.read(res.output_path, as_version=4)
    return json.loads(next(o.text for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []) if o.get('name') == 'stdout'))


def test_each_run_gets_a_fresh_forked_kernel(project, monkeypatch):
    monkeypatch.setenv('MLNB_PROBE', 'from-env')
    nb = make_notebook(project/'probe.ipynb', 'x = 1', PROBE)
    seen = []
    for i in range(4):
        res = mlnb.run(nb, {'x': i})
        assert res.status == 'FINISHED', res.summary()
        seen.append(probe(res))
    server_pid = forkserver.server.info['ready']
    assert {p['ppid'] for p in seen} == {server_pid}, 'kernels are children of the fork server'
    assert len({p['pid'] for p in seen}) == 4, 'one kernel process per Run'
    assert all(p['mark'] is None for p in seen), 'module state did not leak from one Run into the next'
    assert len({p['rand'] for p in seen}) == 4, 'random is reseeded in every forked kernel'
    assert all(p['sid'] == p['pid'] for p in seen), 'each kernel leads its own session (interrupts reach its group)'
    assert all(os.path.realpath(p['cwd']) == os.path.realpath(project) and p['probe'] == 'from-env' for p in seen)
    time.sleep(0.5)
    assert psutil.Process(server_pid).children() == [], 'every kernel was shut down'


def test_popen_kernels_when_disabled_give_the_same_notebook(project, monkeypatch):
    nb = make_notebook(project/'probe.ipynb', 'x = 1', PROBE, 'print(x * 2)')
    forked = mlnb.run(nb, {'x': 3})
    monkeypatch.setenv('MLNB_KERNEL_FORK', '0')
    plain = mlnb.run(nb, {'x': 3})
    assert (forked.status, plain.status) == ('FINISHED', 'FINISHED')
    f, p = probe(forked), probe(plain)
    assert p['ppid'] == os.getpid() and f['ppid'] == forkserver.server.info['ready']
    import nbformat
    def rest(path): return [(c.source, [o.get('text') for o in c.get('outputs', [])]) for c in nbformat.read(path, as_version=4).cells[2:]]
    assert rest(forked.output_path)[1:] == rest(plain.output_path)[1:] == [('print(x * 2)', ['6\n'])]


def test_interrupt_and_kernel_death_reach_a_forked_kernel(project):
    nb = make_notebook(project/'slow.ipynb', 'x = 1', 'import time\ntime.sleep(60)')
    t = time.time()
    res = mlnb.run(nb, {'x': 1}, timeout=2)
    assert res.status == 'FAILED' and res.reason == 'timeout' and time.time() - t < 30, res.summary()
    died = mlnb.run(make_notebook(project/'die.ipynb', 'x = 1', 'import os\nos._exit(3)'), {'x': 1})
    assert (died.status, died.reason) == ('FAILED', 'kernel_died'), died.summary()


def test_a_killed_server_is_replaced(project):
    nb = make_notebook(project/'probe.ipynb', 'x = 1', PROBE)
    assert mlnb.run(nb, {'x': 1}).status == 'FINISHED'
    old = forkserver.server.info['ready']
    os.kill(old, signal.SIGKILL)
    time.sleep(0.2)
    res = mlnb.run(nb, {'x': 2})
    assert res.status == 'FINISHED', res.summary()
    new = forkserver.server.info['ready']
    assert new != old and probe(res)['ppid'] == new


def test_server_exits_with_its_parent(tmp_path):
    "A process that used the fork server and died (a SIGKILLed Dask worker, say) leaves no server and no kernel behind."
    import subprocess
    import sys
    code = ('from mlnb import forkserver; import sys, time\n'
            'pid = forkserver.server.spawn(["-f", sys.argv[1]], {}, None)\n'
            'print(forkserver.server.info["ready"], pid, flush=True); time.sleep(60)')
    # a kernel with a connection file nobody connects to: it starts, waits; it must still go when its server goes
    from jupyter_client.connect import write_connection_file
    cf, _ = write_connection_file(str(tmp_path/'k.json'), transport='ipc', ip=str(tmp_path/'s'))
    p = subprocess.Popen([sys.executable, '-c', code, cf], stdout=subprocess.PIPE, text=True)
    server_pid, kernel_pid = map(int, p.stdout.readline().split())
    assert psutil.pid_exists(server_pid) and psutil.pid_exists(kernel_pid)
    p.kill(); p.wait()
    deadline = time.time() + 20
    while time.time() < deadline and (psutil.pid_exists(server_pid) or psutil.pid_exists(kernel_pid)):
        time.sleep(0.2)
    alive = [pid for pid in (server_pid, kernel_pid) if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert alive == []
