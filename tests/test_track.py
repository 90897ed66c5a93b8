"A Run as an MLflow run, read back with the stock MlflowClient."
import json
import subprocess
import sys
from pathlib import Path

import nbformat
from conftest import make_notebook
from mlflow import MlflowClient

import mlnb

BODY = '''\
import mlnb, mlflow, os
for epoch in range(5):
    mlnb.log_metric("loss", 1.0 / (epoch + 1), step=epoch)
mlnb.log_metrics({"auc": 0.91, "f1": 0.7})
mlnb.log_param("n_features", 20)
open("report.txt", "w").write("hello")
mlnb.log_artifact("report.txt", artifact_path="reports")
os.remove("report.txt")  # logged artifacts are copied at once
mlflow.log_metric("native_metric", 3.0)  # plain MLflow lands in the same run
print("token inside:", api_token)'''


def test_run_recorded_in_mlflow(project):
    subprocess.run(['git', 'init', '-q'], cwd=project, check=True)
    nb = make_notebook(project/'train.ipynb', 'lr: float = 0.1  # step\nlayers: list[int] = [8]\napi_token: str = ""', BODY)
    subprocess.run(['git', 'add', '.'], cwd=project, check=True)
    subprocess.run(['git', '-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'init'], cwd=project, check=True)
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=project, capture_output=True, text=True).stdout.strip()

    res = mlnb.run(nb, {'lr': '0.5', 'layers': '16,8', 'api_token': 'tok-SECRET-123'}, raw=True, trigger='cli', tags={'team': 'ml'})
    assert res.ok, res.summary()
    assert res.tracking_uri == f"sqlite:///{project/'.mlnb'/'mlflow.db'}"
    c = MlflowClient(res.tracking_uri)
    r = c.get_run(res.run_id)
    assert r.info.status == 'FINISHED'
    assert c.get_experiment(r.info.experiment_id).name == 'testproj'
    assert c.get_experiment(r.info.experiment_id).artifact_location.startswith((project/'.mlnb'/'artifacts').as_uri())
    # parameters, the secret masked
    assert r.data.params == {'lr': '0.5', 'layers': '[16, 8]', 'api_token': '****', 'n_features': '20'}
    # metrics logged from inside the notebook, with their steps, and plain MLflow metrics
    assert r.data.metrics == {'loss': 0.2, 'auc': 0.91, 'f1': 0.7, 'native_metric': 3.0}
    assert [(m.step, m.value) for m in c.get_metric_history(res.run_id, 'loss')] == [(i, 1 / (i + 1)) for i in range(5)]
    assert res.metrics == r.data.metrics
    # tags
    t = r.data.tags
    assert t['mlnb.notebook'] == 'train.ipynb' and t['mlflow.source.name'] == 'train.ipynb'
    from mlnb.track import notebook_hash
    assert t['mlnb.notebook_hash'] == notebook_hash(nb) and len(t['mlnb.notebook_hash']) == 64
    assert t['mlflow.source.git.commit'] == commit and t['mlnb.git_dirty'] == 'false'
    assert t['mlnb.version'] == mlnb.__version__ and t['mlnb.trigger'] == 'cli' and t['team'] == 'ml'
    assert t['mlnb.status'] == 'FINISHED' and 'mlnb.warnings' not in t
    # artifacts: the executed notebook, its HTML render, the notebook's own artifact
    arts = {a.path for a in c.list_artifacts(res.run_id)}
    assert {'train.ipynb', 'train.html', 'reports'} <= arts
    assert [a.path for a in c.list_artifacts(res.run_id, 'reports')] == ['reports/report.txt']
    local = Path(c.download_artifacts(res.run_id, 'train.ipynb', dst_path=str(project/'dl')))
    out = nbformat.read(local, as_version=4)
    printed = ''.join(o.get('text', '') for o in out.cells[-1].outputs)
    assert 'token inside: tok-SECRET-123' in printed  # the kernel got the real value
    # ...but the secret is stored nowhere: not in the output notebook's source, metadata or the store
    raw = Path(res.output_path).read_text()
    injected = out.cells[1].source
    assert 'tok-SECRET-123' not in injected and 'tok-SECRET-123' not in json.dumps(dict(out.metadata))
    assert raw.count('tok-SECRET-123') == 1  # only the printed output the notebook chose to show
    assert b'tok-SECRET-123' not in (project/'.mlnb'/'mlflow.db').read_bytes()
    html = Path(c.download_artifacts(res.run_id, 'train.html', dst_path=str(project/'dl'))).read_text()
    assert '<html' in html and 'loss' in html


def test_failed_run_status_matches(project):
    nb = make_notebook(project/'f.ipynb', 'x = 1', 'import mlnb\nmlnb.log_metric("before_failure", 1)', '1/0')
    res = mlnb.run(nb)
    r = MlflowClient(res.tracking_uri).get_run(res.run_id)
    assert (res.status, r.info.status) == ('FAILED', 'FAILED')
    assert r.data.metrics == {'before_failure': 1.0}  # what was logged before the failure is kept
    assert {'f.ipynb', 'f.html'} <= {a.path for a in MlflowClient(res.tracking_uri).list_artifacts(res.run_id)}


def test_bad_metric_fails_the_cell_with_a_clear_error(project):
    nb = make_notebook(project/'m.ipynb', 'x = 1', 'import mlnb\nmlnb.log_metric("auc", "high")')
    res = mlnb.run(nb)
    assert res.reason == 'exception' and res.error.ename == 'TypeError'
    assert "value must be a number, got str 'high'" in res.error.evalue


def test_param_conflict_is_reported_not_lost(project):
    nb = make_notebook(project/'c.ipynb', 'x = 1', 'import mlnb\nmlnb.log_param("x", 99)\nmlnb.log_metric("m", 2)')
    res = mlnb.run(nb, {'x': 5})
    r = MlflowClient(res.tracking_uri).get_run(res.run_id)
    assert res.ok and r.data.params['x'] == '5' and r.data.metrics == {'m': 2.0}
    assert "param 'x' not recorded" in r.data.tags['mlnb.warnings']


def test_interactive_logging(project):
    code = ('import mlnb\nmlnb.log_metric("a", 1)\nmlnb.log_metric("a", 2, step=1)\nmlnb.log_param("p", "v")\n'
            'print(mlnb.active_run_id())')
    p = subprocess.run([sys.executable, '-c', code], cwd=project, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stderr.count('not inside an mlnb Run') == 1  # said once
    run_id = p.stdout.strip().splitlines()[-1]
    r = MlflowClient(f"sqlite:///{project/'.mlnb'/'mlflow.db'}").get_run(run_id)
    assert r.data.metrics == {'a': 2.0} and r.data.params == {'p': 'v'} and r.data.tags['mlnb.trigger'] == 'interactive'
