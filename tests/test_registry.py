"mlnb.registry on a real MLflow store: register from runs, sweeps and URIs; promote, roll back, history; every error; the CLI."
import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from mlnb import registry
from mlnb.execute import RunResult
from mlnb.registry import RegistryError
from mlnb.sweep import SweepResult


def log_models(root: Path) -> SimpleNamespace:
    """A project store with a sweep parent and three finished child runs: two logged an iris classifier (with a signature and
    an input example) as 'model', one logged nothing; and a FAILED run. Returns the run ids."""
    import mlflow
    import sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from mlnb import track
    from mlnb.config import load_config
    cfg = load_config(root)
    client = track.get_client(cfg)
    exp = track.experiment_id(client, cfg, 'store')
    X, y = load_iris(return_X_y=True, as_frame=True)
    X.columns = ['sepal_length', 'sepal_width', 'petal_length', 'petal_width']
    parent = client.create_run(exp, tags={'mlnb.kind': 'sweep'}).info.run_id
    mlflow.set_tracking_uri(cfg.tracking_uri)  # mlflow's global URI wins over the environment: set it, and unset it after
    ids = {}
    try:
        for key, C in (('weak', 0.001), ('strong', 10.0)):
            with mlflow.start_run(experiment_id=exp, tags={'mlflow.parentRunId': parent}) as r:
                m = LogisticRegression(C=C, max_iter=500).fit(X, y)
                mlflow.log_metric('acc', float(m.score(X, y)))
                mlflow.sklearn.log_model(m, name='model', signature=infer_signature(X, m.predict(X)), input_example=X.head(3),
                                         pip_requirements=[f'scikit-learn=={sklearn.__version__}'])
            ids[key] = r.info.run_id
        with mlflow.start_run(experiment_id=exp, tags={'mlflow.parentRunId': parent}) as r:
            mlflow.log_metric('acc', 0.1)
        ids['nomodel'] = r.info.run_id
        with mlflow.start_run(experiment_id=exp) as r: pass
        client.set_terminated(r.info.run_id, 'FAILED')
        ids['failed'] = r.info.run_id
    finally: mlflow.set_tracking_uri(None)  # unset (it also unsets MLFLOW_TRACKING_URI, which it had set)
    client.set_terminated(parent, 'FINISHED')
    return SimpleNamespace(root=root, db=root/'.mlnb'/'mlflow.db', parent=parent, X=X, **ids)


@pytest.fixture(scope='session')
def model_store(tmp_path_factory):
    root = tmp_path_factory.mktemp('store')
    (root/'mlnb.yaml').write_text('name: store\n')
    return log_models(root)


def copy_store(store, project: Path):
    "The store's database copied into `project` (the models' files stay where the store logged them)."
    (project/'.mlnb').mkdir(exist_ok=True)
    src, dst = sqlite3.connect(store.db), sqlite3.connect(project/'.mlnb'/'mlflow.db')
    with dst: src.backup(dst)
    src.close(); dst.close()


@pytest.fixture
def store(project, model_store):
    "A project whose MLflow store holds the runs of `model_store`."
    copy_store(model_store, project)
    return SimpleNamespace(**{**vars(model_store), 'root': project})


def test_round_trip(store, capsys, monkeypatch):
    import mlflow.pyfunc

    from mlnb.config import load_config
    v1 = registry.register(store.weak, 'iris', alias='champion')
    assert (v1.name, v1.version, v1.run_id, v1.aliases) == ('iris', 1, store.weak, ['champion'])
    assert v1.source.startswith('file://') and v1.tags['mlnb.registered_by']
    v2 = registry.register(f'runs:/{store.strong}/model', 'iris', tags={'team': 'churn'})
    assert (v2.version, v2.aliases, v2.tags['team']) == (2, [], 'churn')

    m = registry.promote('iris', 2)
    assert (m.from_version, m.to_version, m.action, m.changed) == (1, 2, 'promote', True)
    again = registry.promote('iris', '2')
    assert not again.changed and 'version 2 is already champion; nothing changed' in capsys.readouterr().err
    registry.promote('iris', 1, alias='challenger')
    registry.promote('iris', 'latest', alias='challenger')

    uri, mv = registry.resolve('iris')
    assert (uri, mv.version) == ('models:/iris/2', 2)
    assert set(mv.aliases) == {'champion', 'challenger'}
    assert registry.resolve('iris@challenger')[1].version == 2
    assert registry.resolve('iris/1')[0] == 'models:/iris/1'
    assert registry.resolve(f'runs:/{store.weak}/model') == (f'runs:/{store.weak}/model', None)
    monkeypatch.setenv('MLFLOW_TRACKING_URI', load_config().tracking_uri)  # MLflow resolves models:/ URIs in its global store
    preds = mlflow.pyfunc.load_model(uri).predict(store.X.head(5))  # the registered version is a loadable model
    assert len(preds) == 5

    r = registry.rollback('iris')
    assert (r.from_version, r.to_version, r.action) == (2, 1, 'rollback')
    assert registry.resolve('iris')[0] == 'models:/iris/1'
    with pytest.raises(RegistryError, match='has no previous version') as e: registry.rollback('iris')
    assert e.value.exit_code == 1

    h = registry.history('iris')
    assert [(x.alias, x.action, x.from_version, x.to_version) for x in h] == [
        ('champion', 'promote', None, 1), ('champion', 'promote', 1, 2), ('challenger', 'promote', None, 1),
        ('challenger', 'promote', 1, 2), ('champion', 'rollback', 2, 1)]
    assert all('@' in x.by for x in h) and [x.at for x in h] == sorted(x.at for x in h)
    assert [x.to_version for x in registry.history('iris', alias='challenger')] == [1, 2]
    assert [(v.version, v.aliases) for v in registry.versions('iris')] == [(1, ['champion']), (2, ['challenger'])]
    assert registry.models() == [{'name': 'iris', 'latest': 2, 'aliases': {'champion': 1, 'challenger': 2},
                                  'updated': registry.models()[0]['updated']}]


def test_rollback_is_a_stack_and_history_lives_in_the_registry(store):
    from mlflow import MlflowClient

    from mlnb.config import load_config
    for rid in (store.weak, store.strong, store.weak):
        registry.register(rid, 'stack')
    for v in (1, 2, 3): registry.promote('stack', v)
    assert [registry.rollback('stack').to_version for _ in range(2)] == [2, 1]
    with pytest.raises(RegistryError, match='no previous version'): registry.rollback('stack')
    registry.promote('stack', 3)
    assert registry.rollback('stack').to_version == 1
    tags = MlflowClient(load_config().tracking_uri).get_registered_model('stack').tags
    assert sum(k.startswith('mlnb.history.champion.') for k in tags) == 7  # one tag per move: it travels with the registry


def test_concurrent_promotions_chain(store):
    "Two writers promoting at once: every recorded move starts where the one before it ended."
    registry.register(store.weak, 'race')
    registry.register(store.strong, 'race')
    errors = []

    def flip(versions):
        try:
            for v in versions: registry.promote('race', v, quiet=True)
        except Exception as e: errors.append(e)
    ts = [threading.Thread(target=flip, args=([1, 2] * 4,)), threading.Thread(target=flip, args=([2, 1] * 4,))]
    for t in ts: t.start()
    for t in ts: t.join()
    assert not errors
    h = registry.history('race')
    assert h[0].from_version is None and all(a.to_version == b.from_version for a, b in zip(h, h[1:], strict=False))
    assert registry.resolve('race')[1].version == h[-1].to_version


def test_register_from_results_and_sweeps(store):
    res = RunResult('FINISHED', 'train.ipynb', run_id=store.strong, metrics={'acc': 0.98})
    assert registry.register(res, 'from-result').run_id == store.strong
    with pytest.raises(RegistryError, match='ended FAILED \\(exception\\); register a finished run'):
        registry.register(RunResult('FAILED', 'train.ipynb', run_id=store.weak, reason='exception'), 'from-result')
    sweep = SweepResult('train.ipynb', [{'C': 0.001}, {'C': 10}],
                        [RunResult('FINISHED', 'nb', run_id=store.weak, metrics={'acc': 0.7}),
                         RunResult('FINISHED', 'nb', run_id=store.strong, metrics={'acc': 0.97})])
    assert registry.register(sweep, 'from-sweep', metric='acc').run_id == store.strong
    assert registry.register(sweep, 'from-sweep', metric='acc', mode='min').run_id == store.weak
    with pytest.raises(RegistryError, match='registering a sweep needs metric='): registry.register(sweep, 'from-sweep')
    with pytest.raises(RegistryError, match="no finished point logged metric 'f1'"): registry.register(sweep, 'from-sweep', metric='f1')
    # a sweep's parent run id: its best child by metric (the child without a model has the lowest acc)
    assert registry.register(store.parent, 'from-parent', metric='acc').run_id == store.strong
    with pytest.raises(RegistryError, match='recorded no best run; give metric='): registry.register(store.parent, 'from-parent')
    from mlflow import MlflowClient

    from mlnb.config import load_config
    MlflowClient(load_config().tracking_uri).set_tag(store.parent, 'mlnb.best_run_id', store.weak)
    assert registry.register(store.parent, 'from-parent').run_id == store.weak
    assert registry.register(store.strong[:10], 'by-prefix').run_id == store.strong  # the start of a run id, as `mlnb runs` shows


def test_errors(store):
    with pytest.raises(RegistryError, match="no run with id 'f+'"): registry.register('f' * 32, 'iris')
    with pytest.raises(RegistryError, match="has no model logged at 'model'; it logged no model; log one"):
        registry.register(store.nomodel, 'iris')
    with pytest.raises(RegistryError, match="has no model logged at 'clf'; it logged: 'model'; pass artifact="):
        registry.register(store.weak, 'iris', artifact='clf')
    with pytest.raises(RegistryError, match="FAILED; register a finished run"): registry.register(store.failed, 'iris')
    with pytest.raises(RegistryError, match="model name 'iris/v1' is not valid"): registry.register(store.weak, 'iris/v1')
    with pytest.raises(RegistryError, match="alias 'latest' is not valid"): registry.register(store.weak, 'iris', alias='latest')
    with pytest.raises(RegistryError, match="no registered model 'iris'; no model is registered yet"): registry.promote('iris', 1)
    registry.register(store.weak, 'iris')
    with pytest.raises(RegistryError, match="no registered model 'irsi' \\(did you mean 'iris'\\?\\)"): registry.promote('irsi', 1)
    with pytest.raises(RegistryError, match="model 'iris' has no version 7; its versions: 1"): registry.promote('iris', 7)
    with pytest.raises(RegistryError, match="version 'seven' of 'iris' is not a number"): registry.promote('iris', 'seven')
    with pytest.raises(RegistryError, match="no version of 'iris' has alias 'champion'; point it at one with: mlnb registry promote iris"):
        registry.resolve('iris')
    with pytest.raises(RegistryError, match="has no 'champion' alias to roll back") as e: registry.rollback('iris')
    assert e.value.exit_code == 1
    with pytest.raises(RegistryError, match="no registered model 'nope'"): registry.history('nope')


def test_cli(store):
    "`mlnb registry ...` through the real top command (errors are reported by the top group)."
    from mlnb.cli.core import app

    def run(args): return CliRunner().invoke(app, ['registry', *args])
    r = run(['register', store.weak, '--name', 'iris', '--alias', 'champion'])
    assert r.exit_code == 0 and 'registered iris version 1 from run' in r.output and '(champion)' in r.output, r.output
    r = run(['register', store.strong, '--name', 'iris', '--tag', 'k=v', '--json'])
    assert r.exit_code == 0 and json.loads(r.output)['version'] == 2, r.output
    r = run(['promote', 'iris', '2'])
    assert r.exit_code == 0 and 'iris: champion -> version 2 (was version 1; promote)' in r.output
    r = run(['promote', 'iris', '2'])
    assert r.exit_code == 0 and 'already champion; nothing changed' in r.output
    r = run(['rollback', 'iris'])
    assert r.exit_code == 0 and 'champion -> version 1 (was version 2; rollback)' in r.output
    r = run(['rollback', 'iris'])
    assert r.exit_code == 1 and 'mlnb: error:' in r.output and 'no previous version' in r.output
    r = run(['history', 'iris', '--json'])
    assert r.exit_code == 0 and [m['to_version'] for m in json.loads(r.output)] == [1, 2, 1]
    r = run(['history', 'iris'])
    assert r.exit_code == 0 and r.output.splitlines()[0].split() == ['when', 'alias', 'action', 'from', 'to', 'by']
    r = run(['list', '--json'])
    assert r.exit_code == 0 and json.loads(r.output)[0]['aliases'] == {'champion': 1}
    r = run(['list', 'iris'])
    assert r.exit_code == 0 and 'champion' in r.output.splitlines()[1]
    for bad in (['promote', 'iris', '9'], ['promote', 'irsi', '1'], ['register', 'f' * 32, '--name', 'iris'],
                ['register', store.weak, '--name', 'a/b'], ['register', store.weak, '--name', 'x', '--tag', 'novalue'],
                ['list', 'nope']):
        r = run(bad)
        assert r.exit_code == 2 and r.output.startswith('mlnb: error: '), (bad, r.output)


def test_mlnb_registry_command(store):
    "The real `mlnb registry` command, as the lead mounts it."
    registry.register(store.weak, 'iris', alias='champion')
    exe = Path(sys.executable).parent/'mlnb'
    p = subprocess.run([str(exe), 'registry', 'list', '--json', '--project', str(store.root)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)[0]['aliases'] == {'champion': 1}
    p = subprocess.run([str(exe), 'registry', 'promote', 'iris', '5', '--project', str(store.root)], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 2 and "has no version 5; its versions: 1" in p.stderr
