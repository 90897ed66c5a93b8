"mlnb.deploy.local and mlnb.deploy.k8s: Kubernetes manifests that parse and hang together, stale state, a real local deployment end to end."
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import need
from test_registry import copy_store, log_models, model_store  # noqa: F401 -- the session's store of logged models
from typer.testing import CliRunner

from mlnb import registry
from mlnb.deploy import k8s as deploy_k8s
from mlnb.deploy import local as deploy
from mlnb.deploy.common import DeployError
from mlnb.deploy.local import Deployment, is_server

HAS_SERVE = importlib.util.find_spec('mlnb.serve') is not None


@pytest.fixture
def iris(project, model_store):  # noqa: F811
    "A project whose registry has model 'iris': version 1 (champion, a weak classifier) and version 2."
    copy_store(model_store, project)
    registry.register(model_store.weak, 'iris', alias='champion')
    registry.register(model_store.strong, 'iris')
    return model_store


# ---- Kubernetes

def load_dir(out: Path) -> dict:
    docs = {}
    for p in sorted(out.glob('*.yaml')):
        text = p.read_text()
        assert text.startswith(deploy_k8s.MARKER + '\n')
        (doc,) = list(yaml.safe_load_all(text))
        docs[p.name] = doc
    return docs


def test_k8s_manifests(iris, tmp_path, capsys):
    out = tmp_path/'k8s'
    paths = deploy_k8s.write_k8s('iris', out, tracking_uri='http://mlflow.mlops:5000', workers=2, max_replicas=4)
    assert sorted(p.name for p in paths) == sorted([*deploy_k8s.K8S_FILES, 'Dockerfile', 'requirements-model.txt'])
    assert capsys.readouterr().err == ''  # a reachable tracking URI: no warning
    docs = load_dir(out)
    for n in ('deployment.yaml', 'service.yaml', 'hpa.yaml', 'servicemonitor.yaml'):
        d = docs[n]
        assert d['apiVersion'] and d['kind'] and d['metadata']['name'] == 'iris', n
    dep, svc, hpa, sm, kus = (docs[n] for n in ('deployment.yaml', 'service.yaml', 'hpa.yaml', 'servicemonitor.yaml', 'kustomization.yaml'))
    assert (dep['apiVersion'], dep['kind']) == ('apps/v1', 'Deployment')
    pod_labels = dep['spec']['template']['metadata']['labels']
    assert dep['spec']['selector']['matchLabels'] == pod_labels
    (c,) = dep['spec']['template']['spec']['containers']
    ports = {p['name']: p['containerPort'] for p in c['ports']}
    assert ports == {'http': 8080}
    assert c['readinessProbe']['httpGet'] == {'path': '/ready', 'port': 'http'}
    assert c['livenessProbe']['httpGet'] == {'path': '/health', 'port': 'http'}
    assert c['resources']['requests']['cpu'] and c['resources']['limits']['memory']
    assert c['command'] == ['mlnb'] and c['args'][:3] == ['serve', 'iris', '--alias'] and c['args'][c['args'].index('--port') + 1] == '8080'
    assert c['args'][c['args'].index('--workers') + 1] == '2'
    env = {e['name']: e for e in c['env']}
    assert env['MLFLOW_TRACKING_URI']['value'] == 'http://mlflow.mlops:5000'
    assert env['MLNB_SERVE_TOKEN']['valueFrom']['secretKeyRef'] == {'name': 'iris-token', 'key': 'token'}  # a reference, no secret
    assert '--production' in c['args']
    mounts = {m['name'] for m in c['volumeMounts']}
    assert mounts <= {v['name'] for v in dep['spec']['template']['spec']['volumes']}
    # the Service reaches the pods, on a port the container has
    assert (svc['apiVersion'], svc['kind']) == ('v1', 'Service')
    assert svc['spec']['selector'] == pod_labels
    assert all(p['targetPort'] in ports for p in svc['spec']['ports'])
    # the HPA scales that Deployment on CPU (which needs the CPU request above)
    assert (hpa['apiVersion'], hpa['kind']) == ('autoscaling/v2', 'HorizontalPodAutoscaler')
    assert hpa['spec']['scaleTargetRef'] == {'apiVersion': 'apps/v1', 'kind': 'Deployment', 'name': dep['metadata']['name']}
    assert (hpa['spec']['minReplicas'], hpa['spec']['maxReplicas']) == (1, 4)
    assert hpa['spec']['metrics'][0]['resource']['name'] == 'cpu' and 'replicas' not in dep['spec']
    # the ServiceMonitor selects the Service by its labels and scrapes /metrics on a named Service port
    assert (sm['apiVersion'], sm['kind']) == ('monitoring.coreos.com/v1', 'ServiceMonitor')
    assert all(svc['metadata']['labels'].get(k) == v for k, v in sm['spec']['selector']['matchLabels'].items())
    (ep,) = sm['spec']['endpoints']
    assert ep['path'] == '/metrics' and ep['port'] in {p['name'] for p in svc['spec']['ports']}
    assert kus['kind'] == 'Kustomization' and all((out/r).is_file() for r in kus['resources'])
    # the image: mlnb and the model's own requirements
    df = (out/'Dockerfile').read_text()
    assert df.startswith(deploy_k8s.MARKER) and f'FROM python:{sys.version_info.major}.{sys.version_info.minor}-slim' in df
    assert 'RUN pip install --compile "mlnb==' in df and 'RUN pip install --compile -r /tmp/requirements-model.txt' in df
    # bytecode is compiled at build time: every `pip install` compiles (the pod's root filesystem is read-only)
    assert all('--compile' in line for line in df.splitlines() if line.startswith('RUN pip install'))
    assert json.loads(df.split('\nCMD ', 1)[1].splitlines()[0])[:3] == ['mlnb', 'serve', 'iris']
    assert 'scikit-learn==' in (out/'requirements-model.txt').read_text()
    # nothing secret anywhere
    assert 's3cret' not in ''.join(p.read_text() for p in out.iterdir())


def test_k8s_overwrite_rules_and_warnings(iris, tmp_path, capsys):
    out = tmp_path/'k8s'
    deploy_k8s.write_k8s('iris', out)  # the project's sqlite store: pods cannot reach it
    assert 'is local to this machine: pods cannot reach it' in capsys.readouterr().err
    deploy_k8s.write_k8s('iris', out, tracking_uri='http://mlflow:5000', max_replicas=9)  # our own files: rewritten
    assert load_dir(out)['hpa.yaml']['spec']['maxReplicas'] == 9
    (out/'service.yaml').write_text('# my own service\n')
    before = (out/'hpa.yaml').read_text()
    with pytest.raises(DeployError, match='service.yaml exists and was not written by mlnb deploy; nothing was written'):
        deploy_k8s.write_k8s('iris', out, tracking_uri='http://mlflow:5000', max_replicas=3)
    assert (out/'hpa.yaml').read_text() == before
    with pytest.raises(DeployError, match='was written for another deployment'):
        deploy_k8s.write_k8s('iris', out, tracking_uri='http://mlflow:5000', deployment='other', force=False)
    deploy_k8s.write_k8s('iris', out, tracking_uri='http://mlflow:5000', force=True)
    assert load_dir(out)['service.yaml']['kind'] == 'Service'
    with pytest.raises(DeployError, match='has credentials in it'):
        deploy_k8s.write_k8s('iris', tmp_path/'x', tracking_uri='https://u:p@mlflow.example.com')
    with pytest.raises(DeployError, match="no registered model 'irs' \\(did you mean 'iris'\\?\\)"):
        deploy_k8s.write_k8s('irs', tmp_path/'x')
    with pytest.raises(DeployError, match='not a registered model'): deploy_k8s.write_k8s(f'runs:/{iris.weak}/model', tmp_path/'x')
    assert not (tmp_path/'x').exists()


def test_cli_both_forms(iris, tmp_path):
    "`mlnb deploy NAME ...` and `mlnb deploy up NAME ...` are the same command, through the real `mlnb` app."
    from mlnb.cli import app
    run = CliRunner().invoke
    r1 = run(app, ['deploy', 'iris', '--target', 'k8s', '-o', str(tmp_path/'a'), '--tracking-uri', 'http://mlflow:5000'])
    r2 = run(app, ['deploy', 'up', 'iris', '--target', 'k8s', '-o', str(tmp_path/'b'), '--tracking-uri', 'http://mlflow:5000'])
    assert r1.exit_code == 0 and r2.exit_code == 0, (r1.output, r2.output)
    assert 'wrote deployment.yaml' in r1.output
    assert load_dir(tmp_path/'a') == load_dir(tmp_path/'b')
    r = run(app, ['deploy', 'iris', '--target', 'k8s'])
    assert r.exit_code == 2 and '--target k8s needs -o DIR' in r.output
    r = run(app, ['deploy', 'nope', '--target', 'k8s', '-o', str(tmp_path/'c')])
    assert r.exit_code == 2 and "no registered model 'nope'" in r.output
    r = run(app, ['deploy', 'status'])
    assert r.exit_code == 0 and 'no deployments' in r.output
    r = run(app, ['deploy', '--help'])
    assert r.exit_code == 0 and all(w in r.output for w in ('up', 'status', 'stop', 'rollback', 'logs'))


# ---- local deployments without a server

def test_stale_state(project):
    "A pid that is gone, or reused by another program, shows as dead; stop forgets it and never signals that program."
    other = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True)
    try:
        Deployment('reused', 'iris', port=5999, pid=other.pid, status='running', project=str(project)).save()
        Deployment('gone', 'iris', port=5998, pid=2**22 + 7, status='running', project=str(project)).save()
        assert {d.name: d.status for d in deploy.status()} == {'reused': 'dead', 'gone': 'dead'}
        assert 'forgot it' in deploy.stop('reused').note
        assert other.poll() is None  # still running: not ours to kill
        assert 'forgot it' in deploy.stop('gone').note
        assert deploy.status('reused').status == 'stopped'
        state = json.loads((project/'.mlnb'/'serving'/'reused'/'deployment.json').read_text())
        assert state['pid'] is None and state['port'] == 5999
    finally:
        other.kill(); other.wait()


def test_deploy_bad_input(iris):
    with pytest.raises(DeployError, match="no registered model 'irsi' \\(did you mean 'iris'\\?\\)"): deploy.deploy('irsi')
    with pytest.raises(DeployError, match="no version of 'iris' has alias 'challenger'"): deploy.deploy('iris', alias='challenger')
    with pytest.raises(DeployError, match='workers must be a whole number >= 1'): deploy.deploy('iris', workers=0)
    with pytest.raises(DeployError, match='challenger_share must be between 0 and 1'): deploy.deploy('iris', challenger_share=2)
    with pytest.raises(DeployError, match="deployment name 'Bad' is not valid"): deploy.deploy('iris', deployment='Bad')
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); s.listen()
        with pytest.raises(DeployError, match=f'port {s.getsockname()[1]} on 127.0.0.1 is in use'):
            deploy.deploy('iris', port=s.getsockname()[1])
    with pytest.raises(DeployError, match="no deployment 'iris'"): deploy.rollback('iris')


# ---- a real local deployment (needs mlnb serve)

def predict(url: str, X, token: str | None = None):
    import httpx
    body = {'dataframe_split': {'columns': list(X.columns), 'data': X.values.tolist()}}
    return httpx.post(f'{url}/invocations', json=body, timeout=60, headers={'Authorization': f'Bearer {token}'} if token else {})


def wait_version(dep: Deployment, v: int, timeout: float = 60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if deploy.status(dep.name).version == v: return
        time.sleep(0.3)
    raise AssertionError(f'{dep.name} still serves version {deploy.status(dep.name).version}, not {v}')


def group_gone(pgid: int) -> bool:
    return not deploy.group_alive(pgid)


def test_local_deploy_end_to_end(iris, project):
    need('mlnb serve', HAS_SERVE, 'mlnb.serve (the model server) is not in this checkout yet')
    dep = deploy.deploy('iris', timeout=240)
    pids = [dep.pid]
    try:
        assert (dep.status, dep.version, dep.model, dep.alias) == ('running', 1, 'iris', 'champion'), deploy.logs('iris')
        assert is_server(dep.pid, dep.port) and 'started deployment' in dep.note
        state = json.loads((project/'.mlnb'/'serving'/'iris'/'deployment.json').read_text())
        assert (state['pid'], state['port'], state['url'], state['model']) == (dep.pid, dep.port, dep.url, 'iris')
        assert 'serve' in state['command'] and state['started'] > 0
        r = predict(dep.url, iris.X.head(4))
        assert r.status_code == 200, r.text
        assert len(r.json()['predictions']) == 4

        same = deploy.deploy('iris')  # the same request: nothing restarts
        assert same.pid == dep.pid and 'already running with these settings' in same.note
        assert [(d.name, d.status, d.version) for d in deploy.status()] == [('iris', 'running', 1)]

        registry.promote('iris', 2)  # the server follows its alias
        wait_version(dep, 2)
        back = deploy.rollback('iris', timeout=60)  # the alias moves back, and the server with it
        assert back.version == 1 and 'champion -> version 1 (was version 2; rollback)' in back.note
        assert registry.resolve('iris')[1].version == 1

        # changed settings, through the real command (token from the environment): stop, then start on the same port; the
        # server outlives the command that started it
        mlnb = str(Path(sys.executable).parent/'mlnb')
        p = subprocess.run([mlnb, 'deploy', 'iris', '--workers', '2'], capture_output=True, text=True, timeout=400, cwd=project,
                           env={**os.environ, 'MLNB_SERVE_TOKEN': 's3cret'})
        assert p.returncode == 0 and "settings changed; restarted deployment 'iris'" in p.stdout, p.stdout + p.stderr
        new = deploy.status('iris')
        pids.append(new.pid)
        assert new.pid != dep.pid and new.port == dep.port and new.status == 'running' and new.version == 1
        assert group_gone(dep.pid)
        assert predict(new.url, iris.X.head(2)).status_code == 401
        assert predict(new.url, iris.X.head(2), token='s3cret').status_code == 200
        assert 's3cret' not in (project/'.mlnb'/'serving'/'iris'/'deployment.json').read_text()

        p = subprocess.run([mlnb, 'deploy', 'status', '--json'], capture_output=True, text=True, timeout=300, cwd=project)
        assert p.returncode == 0, p.stderr
        assert [(d['name'], d['status'], d['version']) for d in json.loads(p.stdout)] == [('iris', 'running', 1)]

        os.killpg(new.pid, signal.SIGKILL)  # a crash: the state file outlives the server
        end = time.monotonic() + 10
        while deploy.status('iris').status != 'dead' and time.monotonic() < end: time.sleep(0.1)
        assert deploy.status('iris').status == 'dead'
        again = deploy.deploy('iris', workers=2, token='s3cret')
        pids.append(again.pid)
        assert again.status == 'running' and 'previous server had died' in again.note
    finally:
        stopped = deploy.stop('iris')
    assert stopped.status == 'stopped' and 'stopped deployment' in stopped.note
    for pid in pids: assert group_gone(pid), f'process group {pid} is still alive'
    assert deploy.status('iris').status == 'stopped'
    assert deploy.logs('iris', 500).count('mlnb deploy: starting iris@champion') == 3


def test_server_that_never_gets_ready(iris):
    "A model the server cannot load: deploy fails with the end of the log and leaves no process."
    need('mlnb serve', HAS_SERVE, 'mlnb.serve (the model server) is not in this checkout yet')
    with pytest.raises(DeployError, match='(exited|was not ready within)') as e:
        deploy.deploy(f'runs:/{iris.nomodel}/model', deployment='broken', timeout=60)
    assert 'server.log' in str(e.value)
    d = deploy.status('broken')
    assert d.status in ('dead', 'stopped') and d.pid is None
