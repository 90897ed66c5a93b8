"Sweeps on real Dask clusters: a LocalCluster, a separate scheduler with two worker processes, and a worker killed mid-sweep."
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_notebook
from distributed import Client, LocalCluster
from mlflow import MlflowClient

from mlnb.params import ParameterError
from mlnb.sweep import sweep

TRAIN = ('import mlnb, time\ntime.sleep(pause)\n'
         'if C < 0: raise ValueError("C must be positive")\n'
         'mlnb.log_metric("score", C * (2 if penalty == "l2" else 1))')
PARAMS = 'C: float = 1.0\npenalty: Literal["l1", "l2"] = "l2"\npause: float = 0.0'


def children(project, parent):
    c = MlflowClient(f"sqlite:///{project/'.mlnb'/'mlflow.db'}")
    exp = c.get_experiment_by_name('testproj')
    return c, c.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")


def test_grid_sweep(project, dask_client):
    nb = make_notebook(project/'t.ipynb', 'from typing import Literal\n' + PARAMS, TRAIN)
    res = sweep(nb, grid={'C': ['0.5', '2'], 'penalty': ['l1', 'l2']}, raw=True, client=dask_client, metric='score', progress=False)
    assert res.ok and len(res.results) == 4
    df = res.to_frame()
    assert list(df.C) == [0.5, 0.5, 2.0, 2.0] and list(df.penalty) == ['l1', 'l2', 'l1', 'l2']
    assert list(df.score) == [0.5, 1.0, 2.0, 4.0] and set(df.status) == {'FINISHED'}
    best = res.best('score')
    assert best.metrics['score'] == 4.0 and best.parameters == {'C': 2.0, 'penalty': 'l2'}
    c, kids = children(project, res.parent_run_id)
    assert len(kids) == 4 and {k.data.tags['mlnb.trigger'] for k in kids} == {'sweep'}
    assert len({k.data.tags['mlnb.run_key'] for k in kids}) == 4
    parent = c.get_run(res.parent_run_id)
    assert parent.info.status == 'FINISHED' and parent.data.metrics['best_score'] == 4.0
    assert parent.data.tags['mlnb.best_run_id'] == best.run_id and parent.data.metrics['points_finished'] == 4
    assert 'sweep.csv' in {a.path for a in c.list_artifacts(res.parent_run_id)}


def test_failing_point_fails_only_itself(project, dask_client):
    nb = make_notebook(project/'t.ipynb', 'from typing import Literal\n' + PARAMS, TRAIN)
    res = sweep(nb, points=[{'C': 1.0}, {'C': -1.0}, {'C': 3.0}], client=dask_client, progress=False)
    assert [r.status for r in res.results] == ['FINISHED', 'FAILED', 'FINISHED']
    assert res.results[1].error.ename == 'ValueError' and not res.ok
    ff = sweep(nb, points=[{'C': -1.0}] + [{'C': float(i), 'pause': 0.5} for i in range(1, 7)], client=dask_client,
               max_concurrent=1, fail_fast=True, progress=False)
    assert ff.results[0].reason == 'exception'
    assert sum(r.ok for r in ff.results) <= 1  # nothing new is submitted after the failure
    assert 'not run' in ff.results[-1].error.evalue


def test_points_are_validated_before_anything_starts(project, dask_client):
    nb = make_notebook(project/'t.ipynb', 'from typing import Literal\n' + PARAMS, TRAIN)
    with pytest.raises(ParameterError) as e:
        sweep(nb, grid={'C': ['1', 'big'], 'penalty': ['l1', 'l3']}, raw=True, client=dask_client, progress=False)
    msg = str(e.value)
    assert "point 1 {'C': '1', 'penalty': 'l3'}: parameter 'penalty' expects Literal['l1', 'l2'], got 'l3'" in msg
    assert "point 2 {'C': 'big', 'penalty': 'l1'}: parameter 'C' expects float, got 'big'" in msg
    assert not (project/'.mlnb').exists()


def test_random_sweep_is_reproducible(project, dask_client):
    nb = make_notebook(project/'t.ipynb', 'from typing import Literal\n' + PARAMS, TRAIN)
    grid = {'C': [0.1, 0.2, 0.3, 0.4], 'penalty': ['l1', 'l2']}
    a = sweep(nb, grid=grid, random=3, seed=7, client=dask_client, progress=False)
    b = sweep(nb, grid=grid, random=3, seed=7, client=dask_client, progress=False)
    assert a.points == b.points and len(a.points) == 3


def _dask(*args):
    return subprocess.Popen([str(Path(sys.executable).parent/'dask'), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def test_sweep_on_separate_scheduler_and_workers(project, tmp_path):
    sf = tmp_path/'scheduler.json'
    procs = [_dask('scheduler', '--host', '127.0.0.1', '--port', '0', '--no-dashboard', '--scheduler-file', str(sf))]
    try:
        deadline = time.time() + 60
        while not sf.exists() and time.time() < deadline: time.sleep(0.2)
        import json
        addr = json.loads(sf.read_text())['address']
        procs += [_dask('worker', addr, '--nthreads', '1', '--no-dashboard', '--name', f'w{i}') for i in range(2)]
        with Client(addr, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
            nb = make_notebook(project/'t.ipynb', 'from typing import Literal\n' + PARAMS,
                               TRAIN + '\nimport socket, os\nmlnb.log_metric("pid", os.getppid())')
            res = sweep(nb, grid={'C': [1.0, 2.0], 'penalty': ['l1', 'l2']}, client=client, progress=False)
        assert res.ok and sorted(res.to_frame().score) == [1.0, 2.0, 2.0, 4.0]
        assert len({r.metrics['pid'] for r in res.results}) == 2  # both workers ran points
    finally:
        for p in procs: os.killpg(p.pid, signal.SIGTERM)
        for p in procs: p.wait(30)


def test_worker_killed_mid_sweep(project):
    nb = make_notebook(project/'t.ipynb', 'from typing import Literal\n' + PARAMS, TRAIN)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)
        import threading
        def killer():  # once both workers are busy with their first points, kill one of them outright
            c = MlflowClient(f"sqlite:///{project/'.mlnb'/'mlflow.db'}")
            deadline = time.time() + 120
            while time.time() < deadline:
                try:
                    exp = c.get_experiment_by_name('testproj')
                    if exp and len(c.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'")) >= 3: break
                except Exception: pass
                time.sleep(0.3)
            time.sleep(1.0)
            os.kill(next(iter(pids.values())), signal.SIGKILL)
        t = threading.Thread(target=killer)
        t.start()
        res = sweep(nb, points=[{'C': float(i), 'pause': 4.0} for i in range(1, 7)], client=client, progress=False)
        t.join()
    assert res.ok, [r.summary() for r in res.results]
    c, kids = children(project, res.parent_run_id)
    keys = [k.data.tags['mlnb.run_key'] for k in kids]
    assert len(kids) == 6 and len(set(keys)) == 6  # every point recorded exactly once
    assert all(k.info.status == 'FINISHED' for k in kids)
    assert sorted(k.data.metrics['score'] for k in kids) == [2.0 * i for i in range(1, 7)]
    assert max(int(k.data.tags['mlnb.attempts']) for k in kids) == 2  # the killed point ran again, in the same run
