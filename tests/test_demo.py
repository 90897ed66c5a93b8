"`mlnb demo` end to end: the churn project runs, is tracked, and its model loads."
import subprocess
import sys
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient


def test_demo(tmp_path):
    dest = tmp_path/'demo'
    p = subprocess.run([str(Path(sys.executable).parent/'mlnb'), 'demo', str(dest), '--rows', '20000'], capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert '01_ingest.ipynb: FINISHED' in out and 'best: ' in out and 'mlnb ui --project' in out
    c = MlflowClient(f"sqlite:///{dest/'.mlnb'/'mlflow.db'}")
    exp = c.get_experiment_by_name('churn')
    runs = c.search_runs([exp.experiment_id])
    ingest = [r for r in runs if r.data.tags['mlnb.notebook'] == '01_ingest.ipynb']
    parent = [r for r in runs if r.data.tags.get('mlnb.kind') == 'sweep']
    points = [r for r in runs if r.data.tags.get('mlflow.parentRunId')]
    assert len(ingest) == 1 and len(parent) == 1 and len(points) == 4 and len(runs) == 6
    ingest, parent = ingest[0], parent[0]
    assert ingest.info.status == parent.info.status == 'FINISHED' and all(r.info.status == 'FINISHED' for r in points)
    assert ingest.data.params['rows'] == '20000' and ingest.data.metrics['rows'] == 20000
    assert 0.1 < ingest.data.metrics['churn_rate'] < 0.35
    assert {(r.data.params['C'], r.data.params['penalty']) for r in points} == {('0.1', 'l1'), ('0.1', 'l2'), ('1.0', 'l1'), ('1.0', 'l2')}
    for r in points: assert {'auc', 'f1', 'precision', 'recall'} <= set(r.data.metrics) and r.data.metrics['auc'] > 0.7  # real signal
    train = c.get_run(parent.data.tags['mlnb.best_run_id'])
    assert train.data.metrics['auc'] == max(r.data.metrics['auc'] for r in points) == parent.data.metrics['best_auc']
    assert f"run {train.info.run_id}" in out
    df = pd.read_parquet(dest/'data'/'subscribers.parquet')
    assert len(df) == 20000 and {'tenure_months', 'plan', 'monthly_charges', 'dropped_calls', 'data_usage_gb', 'region', 'churn'} <= set(df)
    import mlflow
    mlflow.set_tracking_uri(f"sqlite:///{dest/'.mlnb'/'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f'runs:/{train.info.run_id}/model')
    pred = model.predict(df.drop(columns=['churn', 'subscriber_id']).head(50))
    assert len(pred) == 50 and set(pd.Series(pred).unique()) <= {0, 1}
