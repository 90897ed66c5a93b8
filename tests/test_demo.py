"""`mlnb demo` end to end: the churn pipeline runs (ingest, validate, train sweep, evaluate), is tracked, its model loads,
and the second run comes entirely from the cache."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient


def test_demo(tmp_path):
    dest = tmp_path/'demo'
    p = subprocess.run([str(Path(sys.executable).parent/'mlnb'), 'demo', str(dest), '--rows', '20000', '--stop-serving'],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert 'pipeline churn: FINISHED' in out and 'best: ' in out and 'mlnb ui --project' in out
    assert 'second run: FINISHED, 4 of 4 steps cached' in out, out
    assert 'corrupted data: pipeline GATED' in out and 'expect_column_values_to_be_in_set' in out, out
    assert 'FINISHED: ran ingest; cached validate, train, evaluate' in out, out
    # the demo ends deployed: the selected model registered as churn@champion, served, answering real requests, then stopped
    assert 'registered churn version 1' in out and 'POST /invocations with 5 subscribers -> [' in out, out
    assert 'answered by version 1' in out and 'server stopped' in out, out
    c = MlflowClient(f"sqlite:///{dest/'.mlnb'/'mlflow.db'}")
    exp = c.get_experiment_by_name('churn')
    runs = c.search_runs([exp.experiment_id])
    by = lambda nb, status='FINISHED': [r for r in runs if r.data.tags.get('mlnb.notebook') == nb  # noqa: E731
                                        and r.data.tags.get('mlnb.kind') != 'sweep' and r.info.status == status]
    pipelines = sorted((r for r in runs if r.data.tags.get('mlnb.kind') == 'pipeline'), key=lambda r: r.info.start_time)
    sweeps = [r for r in runs if r.data.tags.get('mlnb.kind') == 'sweep']
    points = by('03_train.ipynb')
    # 4 pipeline runs. Step runs: the first made ingest, validate, a sweep (parent + 4 points), evaluate; the second none;
    # the corrupted one ingest and a failed validate; the restored one only ingest (its table is the first one's again)
    assert len(pipelines) == 4 and len(sweeps) == 1 and len(points) == 4 and len(runs) == 4 + 8 + 2 + 1, len(runs)
    first, second, gated, restored = pipelines
    assert second.data.metrics['steps_cached'] == 4 and second.data.metrics['steps_finished'] == 0
    assert gated.data.tags['mlnb.status'] == 'GATED' and gated.data.tags['mlnb.step.train'] == 'SKIPPED'
    assert restored.data.metrics['steps_finished'] == 1 and restored.data.metrics['steps_cached'] == 3
    failed = by('02_validate.ipynb', 'FAILED')
    assert len(failed) == 1 and failed[0].data.metrics['validation_success'] == 0 and failed[0].data.metrics['validation_failed'] >= 2
    ingest = [r for r in by('01_ingest.ipynb') if r.data.tags['mlnb.pipeline_run'] == first.info.run_id][0]
    validate, evaluate = by('02_validate.ipynb')[0], by('04_evaluate.ipynb')[0]
    assert ingest.data.params['rows'] == '20000' and ingest.data.metrics['rows'] == 20000
    assert 0.1 < ingest.data.metrics['churn_rate'] < 0.35
    assert validate.data.metrics['validation_success'] == 1 and validate.data.metrics['validation_evaluated'] == 11
    reports = {a.path for a in c.list_artifacts(validate.info.run_id, 'validation')}
    assert reports == {'validation/subscribers.json', 'validation/subscribers.html'}
    assert {(r.data.params['C'], r.data.params['penalty']) for r in points} == {('0.1', 'l1'), ('0.1', 'l2'), ('1.0', 'l1'), ('1.0', 'l2')}
    for r in points: assert {'auc', 'f1', 'precision', 'recall'} <= set(r.data.metrics) and r.data.metrics['auc'] > 0.7  # real signal
    best = c.get_run(sweeps[0].data.tags['mlnb.best_run_id'])
    assert best.data.metrics['auc'] == max(r.data.metrics['auc'] for r in points)
    assert evaluate.data.params['model_uri'] == f'runs:/{best.info.run_id}/model'  # the selected model was passed on
    assert evaluate.data.metrics['holdout_auc'] == best.data.metrics['auc']  # same held-out split as training
    assert evaluate.data.metrics['top_decile_lift'] > 1.5
    assert f"run {best.info.run_id}" in out
    for r in (ingest, validate, sweeps[0], evaluate): assert r.data.tags['mlflow.parentRunId'] == first.info.run_id
    df = pd.read_parquet(dest/'data'/'subscribers.parquet')
    assert len(df) == 20000 and {'tenure_months', 'plan', 'monthly_charges', 'dropped_calls', 'data_usage_gb', 'region', 'churn'} <= set(df)
    import mlflow
    mlflow.set_tracking_uri(f"sqlite:///{dest/'.mlnb'/'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f'runs:/{best.info.run_id}/model')
    pred = model.predict(df.drop(columns=['churn', 'subscriber_id']).head(50))
    assert len(pred) == 50 and set(pd.Series(pred).unique()) <= {0, 1}
    mv = c.get_model_version_by_alias('churn', 'champion')
    assert str(mv.version) == '1' and mv.run_id == best.info.run_id
    pid = int(re.search(r'serving churn version 1 at http://127\.0\.0\.1:\d+ \(pid (\d+),', out).group(1))
    dep = json.loads((dest/'.mlnb'/'serving'/'churn'/'deployment.json').read_text())
    assert dep['pid'] is None and not _alive(pid)  # --stop-serving left no server behind


def _alive(pid: int) -> bool:
    "A running process (a zombie waiting for its parent to reap it counts as gone)."
    import psutil
    try: return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess: return False
