"""The model server against real components: an MLflow sqlite store in a project's .mlnb/, scikit-learn models logged with
signatures, uvicorn servers on 127.0.0.1 (in a thread, and as `mlnb serve` processes for the end-to-end tests)."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import free_port

COLS = [f'f{i}' for i in range(20)]
SERVE = [str(Path(sys.executable).parent/'mlnb'), 'serve']
JSON = {'content-type': 'application/json'}


def wait_ready(url: str, timeout: float = 180, proc=None) -> list:
    "Poll /ready until 200; returns the statuses seen (so a test can show the flip from 503)."
    seen, t0 = [], time.time()
    while time.time() - t0 < timeout:
        if proc is not None and proc.poll() is not None: raise RuntimeError(f'server exited with {proc.returncode}')
        try:
            r = httpx.get(f'{url}/ready', timeout=5)
            seen.append(r.status_code)
            if r.status_code == 200: return seen
        except httpx.TransportError: seen.append(None)
        time.sleep(0.2)
    raise TimeoutError(f'{url} not ready after {timeout}s: {seen[-5:]}')


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    """A project (as the `project` fixture makes it) with an MLflow store holding: `lr20` v1 (champion) and v2, logistic
    regressions on 20 doubles fit on arrays; `churnish` v1, a ColumnTransformer pipeline with a categorical column fit on a
    DataFrame; and `nosig`, lr20 logged without a signature. Module-scoped: logging models costs seconds."""
    import mlflow
    import sklearn
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    mp = pytest.MonkeyPatch()
    for k in list(os.environ):
        if k.startswith('MLNB_') or k in ('MLFLOW_TRACKING_URI', 'MLFLOW_RUN_ID', 'MLFLOW_EXPERIMENT_ID'): mp.delenv(k)
    p = tmp_path_factory.mktemp('serve') / 'proj'
    (p / '.mlnb').mkdir(parents=True)
    (p / 'mlnb.yaml').write_text('name: servetest\n')
    uri = f'sqlite:///{p}/.mlnb/mlflow.db'
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment('serve', artifact_location=(p / '.mlnb' / 'artifacts').as_uri()))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 20))
    df = pd.DataFrame(X, columns=COLS)
    req = [f'scikit-learn=={sklearn.__version__}']
    c = mlflow.MlflowClient(uri)
    for flip in (False, True):  # v2 answers the opposite of v1
        y = ((X[:, 0] + X[:, 1] > 0) ^ flip).astype(int)
        m = LogisticRegression().fit(X, y)
        with mlflow.start_run():
            mlflow.sklearn.log_model(m, name='model', signature=infer_signature(df.head(5), m.predict(X[:5])), pip_requirements=req,
                                     registered_model_name='lr20')
    with mlflow.start_run():
        mlflow.sklearn.log_model(m, name='model', pip_requirements=req, registered_model_name='nosig')
    c.set_registered_model_alias('nosig', 'champion', 1)
    c.set_registered_model_alias('lr20', 'champion', 1)
    d = pd.DataFrame({'region': rng.choice(['north', 'south', 'east', 'west'], 400), 'tenure': rng.integers(1, 60, 400),
                      'charges': rng.normal(50, 10, 400).round(2)})
    y = ((d.region == 'north') | (d.tenure < 12)).astype(int)
    pipe = Pipeline([('pre', ColumnTransformer([('num', StandardScaler(), ['tenure', 'charges']),
                                                ('cat', OneHotEncoder(handle_unknown='ignore'), ['region'])])),
                     ('lr', LogisticRegression())]).fit(d, y)
    with mlflow.start_run():
        mlflow.sklearn.log_model(pipe, name='model', signature=infer_signature(d.head(5), pipe.predict(d.head(5))), input_example=d.head(3),
                                 pip_requirements=req, registered_model_name='churnish')
    c.set_registered_model_alias('churnish', 'champion', 1)
    yield SimpleNamespace(project=p, uri=uri, client=c, X=X, churn=d)
    mlflow.set_tracking_uri(None)  # mlflow's global URI (and the MLFLOW_TRACKING_URI it set) must not leak into other tests
    mp.undo()


class ThreadServer:
    "A uvicorn server for an app of `create_app`, in a thread of the test process."
    def __init__(self, app):
        import uvicorn
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=self.port, log_level='warning', lifespan='on'))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        wait_ready(self.url)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)


def app_for(store, model, **kw):
    from mlnb.serve.app import create_app
    return create_app(model, project=store.project, tracking_uri=store.uri, **kw)


def bodies(df: pd.DataFrame) -> dict:
    "The same rows in each request format MLflow's scoring server takes (values as Python numbers, not rounded)."
    cols = {c: df[c].tolist() for c in df.columns}
    recs = [dict(zip(cols, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]
    rows = [list(r.values()) for r in recs]
    back = list(df.columns)[::-1]
    return {'dataframe_split': {'dataframe_split': {'columns': list(df.columns), 'data': rows}},
            'dataframe_split (columns in another order)': {'dataframe_split': {'columns': back,
                                                                               'data': [[r[c] for c in back] for r in recs]}},
            'dataframe_records': {'dataframe_records': recs},
            'instances': {'instances': recs},
            'inputs (columns)': {'inputs': cols},
            'inputs (records)': {'inputs': recs}}


# ---------------------------------------------------------------------------------------------- predictions
@pytest.mark.parametrize('model,path', [('lr20', 'numpy'), ('churnish', 'frame'), ('nosig', 'mlflow')])
def test_every_format_predicts_as_pyfunc(store, model, path):
    import mlflow
    rows = pd.DataFrame(store.X[:7], columns=COLS) if model != 'churnish' else store.churn.iloc[:7].reset_index(drop=True)
    want = mlflow.pyfunc.load_model(f'models:/{model}/1').predict(rows)
    with ThreadServer(app_for(store, model)) as s:
        ready = httpx.get(f'{s.url}/ready').json()
        assert ready['models'][0]['path'] == path, ready
        for fmt, body in bodies(rows).items():
            if model == 'nosig' and fmt not in ('dataframe_split', 'dataframe_records'): continue  # MLflow parses these into dicts
            r = httpx.post(f'{s.url}/invocations', json=body)
            assert r.status_code == 200, (fmt, r.text)
            assert r.json() == {'predictions': want.tolist()}, fmt
            assert (r.headers['x-model-version'], r.headers['x-model-alias']) == ('1', 'champion')


def test_fast_path_equals_pyfunc_on_many_rows(store):
    "The NumPy path (and its linear-model formula) gives pyfunc's predictions on 2,000 rows, in 100-row batches and one by one."
    import mlflow
    rows = pd.DataFrame(np.random.default_rng(5).normal(scale=4, size=(2000, 20)), columns=COLS)
    want = mlflow.pyfunc.load_model('models:/lr20/1').predict(rows).tolist()
    with ThreadServer(app_for(store, 'lr20')) as s, httpx.Client(base_url=s.url) as c:
        got = []
        for i in range(0, 2000, 100):
            body = {'dataframe_split': {'columns': COLS, 'data': rows[i:i + 100].to_numpy().tolist()}}
            got += c.post('/invocations', json=body).json()['predictions']
        assert got == want
        one = [c.post('/invocations', json={'dataframe_records': [r]}).json()['predictions'][0] for r in rows[:200].to_dict('records')]
        assert one == want[:200]


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_input_gets_4xx_naming_the_problem(store):
    row = dict(zip(COLS, store.X[0].tolist(), strict=True))
    with ThreadServer(app_for(store, 'lr20', max_body_bytes=64 * 1024)) as s, httpx.Client(base_url=s.url) as c:
        def post(body, status, *words, raw=False, headers=JSON):
            r = c.post('/invocations', content=body if raw else json.dumps(body), headers=headers)
            assert r.status_code == status, (body if not raw else body[:80], r.status_code, r.text)
            for w in words: assert w in r.json()['message'], (w, r.json())
            return r.json()
        missing = {k: v for k, v in row.items() if k not in ('f3', 'f7')}
        e = post({'dataframe_records': [missing]}, 422, "missing columns 'f3', 'f7'")
        assert {p['column'] for p in e['problems']} == {'f3', 'f7'}
        post({'dataframe_records': [{**row, 'bogus': 1.0}]}, 422, "unknown column 'bogus'")
        post({'dataframe_split': {'columns': COLS, 'data': [[*store.X[0][:2], 'abc', *store.X[0][3:]]]}}, 422,
             "column 'f2': expected double, got string 'abc' (row 0)")
        post({'instances': [{**row, 'f5': [1, 2]}]}, 422, "'f5': expected double, got a JSON array")
        post({'dataframe_split': {'columns': COLS, 'data': [[1.0] * 19]}}, 422, 'data[0] has 19 values')
        post({'dataframe_split': {'columns': COLS, 'data': []}}, 422, 'no rows')
        post({'dataframe_records': [{**row, 'f0': None}]}, 422, 'the model could not score the input', 'NaN')
        post(b'{"dataframe_split": {"columns": [', 400, 'not valid JSON', raw=True)
        post(b'\xff\xfe', 400, 'not valid JSON', raw=True)
        post({'dataframe_splitt': {}}, 400, "unknown key 'dataframe_splitt'", "did you mean 'dataframe_split'")
        post({'instances': [row], 'inputs': [row]}, 400, 'exactly one')
        post([row], 400, 'got a JSON array')
        post(b'x' * (65 * 1024), 413, 'larger than 65536 bytes', raw=True)
        post({'dataframe_records': [row]}, 415, 'send application/json', headers={'content-type': 'text/csv'})

        def chunks():  # no Content-Length: the size is checked as the body streams in
            for _ in range(40): yield b' ' * 4096
        r = c.post('/invocations', content=chunks(), headers=JSON)
        assert r.status_code == 413 and 'larger than' in r.json()['message']
        r = c.get('/invocations')
        assert r.status_code == 405 and r.headers['allow'] == 'POST'
        assert c.post('/invocations', json={'dataframe_records': [row]}).status_code == 200  # still serving


def test_openapi_fuzzing_finds_no_server_error(store, tmp_path):
    "schemathesis (examples, coverage and fuzzing phases) against the served OpenAPI document: no 5xx, responses as documented."
    with ThreadServer(app_for(store, 'lr20')) as s:
        doc = httpx.get(f'{s.url}/openapi.json').json()
        assert {'/invocations', '/health', '/ready', '/version', '/metrics'} <= set(doc['paths'])
        body = doc['paths']['/invocations']['post']['requestBody']['content']['application/json']['schema']['oneOf']
        assert [next(iter(b['required'])) for b in body] == ['dataframe_split', 'dataframe_records', 'instances', 'inputs']
        # positive_data_acceptance is left out: JSON Schema cannot say that columns of `inputs` have equal lengths
        cmd = [str(Path(sys.executable).parent / 'schemathesis'), 'run', f'{s.url}/openapi.json', '--max-examples', '40', '-w', '1',
               '--checks', 'all', '--exclude-checks', 'positive_data_acceptance', '--no-color', '--seed', '1',
               '--generation-database', 'none']
        t0 = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)  # its cache goes to tmp_path
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
        assert time.time() - t0 < 60
        assert 'no issues found' in r.stdout.lower() or 'passed' in r.stdout.lower()
        assert httpx.get(f'{s.url}/metrics').text.count('status="5') == 0


# ---------------------------------------------------------------------------------------------- auth
def test_auth_tokens_and_jwt(store, tmp_path):
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    pem_key, jwks_key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    pub = tmp_path / 'pub.pem'
    pub.write_bytes(pem_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(jwks_key.public_key()))
    (tmp_path / 'jwks.json').write_text(json.dumps({'keys': [{**jwk, 'kid': 'k1', 'alg': 'RS256', 'use': 'sig'}]}))
    app = app_for(store, 'lr20', tokens=['static-token'], jwt_secret='hs-secret', jwt_public_key=pub, jwks=tmp_path / 'jwks.json',
                  jwt_audience='mlnb-serve', jwt_scopes=['predict'])
    good = {'aud': 'mlnb-serve', 'scope': 'predict', 'exp': int(time.time()) + 600}
    row = {'dataframe_records': [dict(zip(COLS, store.X[0].tolist(), strict=True))]}
    with ThreadServer(app) as s, httpx.Client(base_url=s.url) as c:
        def call(token, status, word=None):
            r = c.post('/invocations', json=row, headers={'authorization': f'Bearer {token}'} if token else {})
            assert r.status_code == status, (token, r.text)
            if status in (401, 403): assert r.headers['www-authenticate'].startswith('Bearer')
            if word: assert word in r.json()['message'], r.json()
        call(None, 401, 'missing bearer token')
        call('nope', 401, 'invalid token')
        call('static-token', 200)
        call(jwt.encode(good, 'hs-secret'), 200)
        call(jwt.encode(good, pem_key, algorithm='RS256'), 200)
        call(jwt.encode(good, jwks_key, algorithm='RS256', headers={'kid': 'k1'}), 200)
        call(jwt.encode(good, jwks_key, algorithm='RS256', headers={'kid': 'other'}), 401, "no key with kid 'other'")
        call(jwt.encode(good, 'wrong-secret'), 401, 'invalid token')
        call(jwt.encode({**good, 'exp': int(time.time()) - 120}, 'hs-secret'), 401, 'expired')
        call(jwt.encode({**good, 'scope': 'read'}, 'hs-secret'), 403, 'lacks the scope(s) predict')
        call(jwt.encode({**good, 'aud': 'someone-else'}, pem_key, algorithm='RS256'), 403, 'not for this audience')
        call('eyJhbGciOiJub25lIn0.e30.', 401)  # alg none
        assert c.get('/version').status_code == 401
        assert c.get('/version', headers={'authorization': 'Bearer static-token'}).json()['version'] == '1'
        for probe in ('/health', '/ready', '/metrics', '/openapi.json'): assert c.get(probe).status_code == 200, probe
        doc = c.get('/openapi.json').json()
        assert doc['paths']['/invocations']['post']['security'] == [{'bearer': []}]


def test_cli_checks_before_starting(store):
    "--production without auth, an unknown model, a missing alias: exit 2 with what to do, before any server starts."
    env = {**os.environ, 'MLFLOW_TRACKING_URI': '', 'MLNB_SERVE_TOKEN': ''}
    def serve(*args):
        return subprocess.run([*SERVE, *args, '--project', str(store.project), '--port', str(free_port())], capture_output=True,
                              text=True, timeout=120, env=env)
    r = serve('lr20', '--production')
    assert r.returncode == 2 and '--production needs authentication' in r.stderr and '--token' in r.stderr
    r = serve('lr2O')
    assert r.returncode == 2 and "no registered model 'lr2O'" in r.stderr and "did you mean 'lr20'" in r.stderr
    r = serve('lr20', '--alias', 'champoin')
    assert r.returncode == 2 and "no alias 'champoin'" in r.stderr and "did you mean 'champion'" in r.stderr
    r = serve('runs:/abc/model', '--alias', 'x')
    assert r.returncode == 2 and 'models:/NAME@ALIAS' in r.stderr
    r = serve('lr20', '--challenger-share', '1.5')
    assert r.returncode == 2 and '--challenger-share' in r.stderr


# ---------------------------------------------------------------------------------------------- end to end (mlnb serve processes)
class ProcServer:
    "`mlnb serve` as a process; counts the /invocations requests the tests send it."
    def __init__(self, store, *args):
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        env = {**os.environ, 'MLFLOW_DISABLE_TELEMETRY': 'true'}
        self.log = open(store.project / f'serve-{self.port}.log', 'w')
        self.proc = subprocess.Popen([*SERVE, *args, '--port', str(self.port), '--project', str(store.project)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=store.project)
        self.ready_seen = wait_ready(self.url, proc=self.proc)
        self.sent, self.lock = 0, threading.Lock()

    def post(self, client, row, headers=None):
        with self.lock: self.sent += 1
        return client.post(f'{self.url}/invocations', json={'dataframe_records': [row]}, headers=headers)

    def stop(self):
        "SIGTERM, as Kubernetes stops a pod; True when the server shut down gracefully (uvicorn then re-raises the signal)."
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        self.log.close()
        return self.proc.returncode in (0, -signal.SIGTERM) and 'Application shutdown complete' in Path(self.log.name).read_text()


def wait_for(pred, timeout=60, what=''):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred(): return
        time.sleep(0.1)
    raise TimeoutError(what)


@pytest.fixture(scope='module')
def e2e(store):
    s = ProcServer(store, 'lr20', '--challenger-share', '0.2', '--sticky-header', 'X-User-Id', '--poll-s', '0.3', '--name', 'e2e')
    yield s
    s.stop()


def test_ready_flips_and_metrics(e2e):
    assert 503 in e2e.ready_seen and e2e.ready_seen[-1] == 200  # up (503 while the model loads), then ready
    r = httpx.get(f'{e2e.url}/ready').json()
    assert r['ready'] and r['models'][0]['version'] == '1' and r['models'][0]['path'] == 'numpy'
    with httpx.Client() as c:
        row = dict(zip(COLS, [0.1] * 20, strict=True))
        for _ in range(5): assert e2e.post(c, row).status_code == 200
        e2e.sent += 1
        assert c.post(f'{e2e.url}/invocations', json={'dataframe_records': [{'f0': 1.0}]}).status_code == 422
    m = httpx.get(f'{e2e.url}/metrics').text
    assert 'mlnb_serve_requests_total{alias="champion",model_version="1",status="200"}' in m
    assert 'mlnb_serve_requests_total{alias="champion",model_version="1",status="422"} 1.0' in m
    for name in ('mlnb_serve_request_seconds_bucket', 'mlnb_serve_in_flight', 'mlnb_serve_rows_total',
                 'mlnb_serve_request_log_dropped_total',
                 'mlnb_serve_model_load_seconds{alias="champion",model_version="1"}'):
        assert name in m, name
    v = httpx.get(f'{e2e.url}/version').json()
    assert (v['model'], v['version'], v['alias'], v['mlnb']) == ('lr20', '1', 'champion', __import__('mlnb').__version__)
    assert httpx.get(f'{e2e.url}/health').json() == {'status': 'alive'}


def test_alias_moves_under_load_with_no_failed_request(store, e2e):
    "4 clients send requests back to back while champion moves 1 -> 2 -> 1: every request answers 200 and each client sees 1, 2, 1."
    stop, results, errors = threading.Event(), [[] for _ in range(4)], []
    row = dict(zip(COLS, store.X[3].tolist(), strict=True))

    def client(i):
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                try:
                    r = e2e.post(c, row)
                    results[i].append((r.status_code, r.headers.get('x-model-version'), r.json()['predictions'][0]))
                except Exception as e: errors.append(repr(e))
    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads: t.start()
    try:
        wait_for(lambda: all(len(r) > 100 for r in results), 60, 'no traffic')
        store.client.set_registered_model_alias('lr20', 'champion', 2)
        wait_for(lambda: all(res and res[-1][1] == '2' for res in results), 120, 'champion 2 never answered')
        n2 = sum(len(r) for r in results)
        wait_for(lambda: sum(len(r) for r in results) > n2 + 300, 60, 'no traffic on 2')
        store.client.set_registered_model_alias('lr20', 'champion', 1)  # the rollback
        wait_for(lambda: all(res and res[-1][1] == '1' for res in results), 120, 'rollback never answered')
        n1 = sum(len(r) for r in results)
        wait_for(lambda: sum(len(r) for r in results) > n1 + 300, 60, 'no traffic after the rollback')
    finally:
        stop.set()
        for t in threads: t.join(30)
    assert not errors, errors[:3]
    allres = [x for r in results for x in r]
    assert {s for s, _, _ in allres} == {200}, 'failed requests during the switch'
    for r in results:
        versions = [v for _, v, _ in r]
        compressed = [v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v]
        assert compressed == ['1', '2', '1'], compressed
    assert {(v, p) for _, v, p in allres} == {('1', allres[0][2]), ('2', 1 - allres[0][2])}  # v2 answers the opposite


def test_ab_split_and_stickiness(store, e2e):
    store.client.set_registered_model_alias('lr20', 'challenger', 2)
    try:
        wait_for(lambda: len(httpx.get(f'{e2e.url}/ready').json()['models']) == 2, 120, 'challenger never loaded')
        row = dict(zip(COLS, store.X[4].tolist(), strict=True))
        answers, lock = {}, threading.Lock()

        def users(ids):
            with httpx.Client(timeout=30) as c:
                for u in ids:
                    r = e2e.post(c, row, {'X-User-Id': f'user-{u}'})
                    assert r.status_code == 200
                    with lock: answers.setdefault(u, []).append((r.headers['x-model-version'], r.headers['x-model-alias']))
        chunks = [range(i, 2000, 4) for i in range(4)] + [list(range(50)) * 4]  # 2,000 users, then 50 of them again (4 times)
        threads = [threading.Thread(target=users, args=(ch,)) for ch in chunks]
        for t in threads: t.start()
        for t in threads: t.join(300)
        first = [a[0] for a in answers.values()]
        share = sum(v == '2' for v, _ in first) / len(first)
        assert len(first) == 2000 and abs(share - 0.2) <= 0.05, share
        assert all(alias == {'1': 'champion', '2': 'challenger'}[v] for v, alias in first)
        for u in range(50): assert len(answers[u]) == 5 and len(set(answers[u])) == 1, answers[u]
        with httpx.Client() as c:  # no header: random, still about the share
            vs = [e2e.post(c, row).headers['x-model-version'] for _ in range(600)]
        assert 0.12 <= vs.count('2') / len(vs) <= 0.28
    finally:
        store.client.delete_registered_model_alias('lr20', 'challenger')
    wait_for(lambda: len(httpx.get(f'{e2e.url}/ready').json()['models']) == 1, 60, 'challenger never dropped')


def test_failed_load_keeps_serving_and_shows_in_ready(store, e2e):
    broken = store.project / 'broken-model'
    broken.mkdir()
    (broken / 'MLmodel').write_text('flavors: {python_function: {loader_module: no_such_module, python_version: "3.11"}}\n')
    mv = store.client.create_model_version('lr20', str(broken))
    store.client.set_registered_model_alias('lr20', 'champion', mv.version)
    try:
        wait_for(lambda: 'champion' in httpx.get(f'{e2e.url}/ready').json()['errors'], 120, 'the failure never showed')
        r = httpx.get(f'{e2e.url}/ready')
        assert r.status_code == 200 and r.json()['models'][0]['version'] == '1' and 'no_such_module' in r.json()['errors']['champion']
        with httpx.Client() as c: assert e2e.post(c, dict(zip(COLS, [0.0] * 20, strict=True))).headers['x-model-version'] == '1'
        assert 'mlnb_serve_model_load_failures_total{alias="champion"}' in httpx.get(f'{e2e.url}/metrics').text
    finally:
        store.client.set_registered_model_alias('lr20', 'champion', 1)
    wait_for(lambda: not httpx.get(f'{e2e.url}/ready').json()['errors'], 60, 'the error never cleared')


def test_request_log_has_every_request(store, e2e):
    "After SIGTERM the server writes what is queued: one row per request sent, as Parquet files with the pid in their names."
    with httpx.Client() as c:
        for i in range(30): assert e2e.post(c, dict(zip(COLS, store.X[i].tolist(), strict=True))).status_code == 200
    assert e2e.stop()
    folder = store.project / '.mlnb' / 'serving' / 'e2e' / 'requests'  # --name e2e
    files = sorted(folder.glob('*.parquet'))
    assert files and all(f.name.split('-')[2] == str(e2e.proc.pid) for f in files)
    log = pd.read_parquet(folder)
    assert len(log) == e2e.sent, (len(log), e2e.sent)
    assert set(zip(log.mlnb_model_version, log.mlnb_alias, strict=True)) <= {('1', 'champion'), ('2', 'champion'), ('2', 'challenger')}
    assert set(log.mlnb_status) <= {200, 422} and (log.mlnb_latency_ms > 0).all()
    assert log[log.mlnb_status == 422][COLS].isna().all().all()  # a refused request is logged without inputs
    last = log.sort_values('mlnb_ts').tail(30)
    np.testing.assert_array_equal(last[COLS].to_numpy(), store.X[:30])
    import mlflow
    want = mlflow.pyfunc.load_model('models:/lr20/1').predict(pd.DataFrame(store.X[:30], columns=COLS))
    assert last.mlnb_prediction.tolist() == want.tolist()


def test_workers_each_write_their_own_log(store, tmp_path):
    "--workers 2: both processes serve, and each writes request-log files named with its pid."
    s = ProcServer(store, 'lr20', '--workers', '2', '--request-log', str(tmp_path / 'log'), '--name', 'two')
    ok = 0
    while ok < 30:  # both workers loaded: 30 new connections in a row answer ready
        ok = ok + 1 if httpx.get(f'{s.url}/ready').status_code == 200 else 0
    try:
        row = dict(zip(COLS, [0.2] * 20, strict=True))
        with httpx.Client() as c:
            for _ in range(200): assert s.post(c, row).status_code == 200
            for _ in range(200):  # new connections spread over the workers
                with httpx.Client() as c1: assert s.post(c1, row).status_code == 200
    finally:
        assert s.stop()
    log = pd.read_parquet(tmp_path / 'log')
    assert len(log) == s.sent
    pids = {f.name.split('-')[2] for f in (tmp_path / 'log').glob('*.parquet')}
    assert len(pids) == 2, pids
