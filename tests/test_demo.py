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
    assert '01_ingest.ipynb  FINISHED' in out and '02_train.ipynb   FINISHED' in out and 'mlnb ui --project' in out
    c = MlflowClient(f"sqlite:///{dest/'.mlnb'/'mlflow.db'}")
    exp = c.get_experiment_by_name('churn')
    runs = {r.data.tags['mlnb.notebook']: r for r in c.search_runs([exp.experiment_id])}
    assert set(runs) == {'01_ingest.ipynb', '02_train.ipynb'}
    ingest, train = runs['01_ingest.ipynb'], runs['02_train.ipynb']
    assert ingest.info.status == train.info.status == 'FINISHED'
    assert ingest.data.params['rows'] == '20000' and ingest.data.metrics['rows'] == 20000
    assert 0.1 < ingest.data.metrics['churn_rate'] < 0.35
    m = train.data.metrics
    assert {'auc', 'f1', 'precision', 'recall'} <= set(m) and m['auc'] > 0.7, m  # the label has real signal
    df = pd.read_parquet(dest/'data'/'subscribers.parquet')
    assert len(df) == 20000 and {'tenure_months', 'plan', 'monthly_charges', 'dropped_calls', 'data_usage_gb', 'region', 'churn'} <= set(df)
    import mlflow
    mlflow.set_tracking_uri(f"sqlite:///{dest/'.mlnb'/'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f'runs:/{train.info.run_id}/model')
    pred = model.predict(df.drop(columns=['churn', 'subscriber_id']).head(50))
    assert len(pred) == 50 and set(pd.Series(pred).unique()) <= {0, 1}
