"8 Runs at once, in 8 processes, against one fresh SQLite store: all recorded, none lost, never 'database is locked'."
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

from conftest import make_notebook
from mlflow import MlflowClient


def _one(args):
    nb, i = args
    import mlnb
    r = mlnb.run(nb, {'i': i})
    return r.status, r.run_id, r.metrics, r.summary()


def test_eight_runs_at_once(project, capfd):
    nb = make_notebook(project/'w.ipynb', 'i = 0', 'import mlnb, mlflow\n'
                       'for s in range(30):\n    mlnb.log_metric("m", i * 100 + s, step=s)\n'
                       'mlflow.log_metric("native", i)')  # the kernel writes to the store too
    ctx = mp.get_context('spawn')
    with ProcessPoolExecutor(8, mp_context=ctx) as ex:
        out = list(ex.map(_one, [(str(nb), i) for i in range(8)]))
    assert [o[0] for o in out] == ['FINISHED'] * 8, [o[3] for o in out]
    c = MlflowClient(f"sqlite:///{project/'.mlnb'/'mlflow.db'}")
    exp = c.get_experiment_by_name('testproj')
    runs = c.search_runs([exp.experiment_id])
    assert len(runs) == 8 and {r.info.run_id for r in runs} == {o[1] for o in out}
    for r in runs:
        i = int(r.data.params['i'])
        assert r.info.status == 'FINISHED' and 'mlnb.warnings' not in r.data.tags
        assert r.data.metrics == {'m': i * 100 + 29, 'native': i}
        assert len(c.get_metric_history(r.info.run_id, 'm')) == 30
    err = capfd.readouterr().err
    assert 'database is locked' not in err
