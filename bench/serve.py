"""Serving latency and throughput: one scikit-learn LogisticRegression (20 double features, logged with a signature) served by
`mlflow models serve --env-manager local` and by `mlnb serve` (default settings: request log on, one worker each), same
run, same machine, same load generator (wrk, a Lua script POSTing a fixed body) on 127.0.0.1: single-row `dataframe_split`
requests at 1 and 8 connections and 100-row batches at 1 and 8 connections, `--seconds` each after a warm-up, the two
servers alternating (`--repeat N`: N runs each, the median reported). Both servers' predictions are checked against
`pyfunc.load_model(uri).predict` first. Prints one JSON line: req/s, p50 and p99 latency (ms) per server and setting, and
the mlnb/mlflow ratios. wrk corrects for coordinated omission, so a stall shows in p99 for as long as it lasts.

    python bench/serve.py [--seconds 10] [--repeat 1] [--no-log]
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault('MLFLOW_DISABLE_TELEMETRY', 'true')
BIN = Path(sys.executable).parent
COLS = [f'f{i}' for i in range(20)]
WRK_LUA = """
local f = io.open(os.getenv("BODY"), "r"); wrk.body = f:read("*a"); f:close()
wrk.method = "POST"; wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  io.write(string.format('{"requests": %d, "seconds": %.3f, "p50_us": %d, "p99_us": %d, "max_us": %d, '
    .. '"socket_errors": %d, "non200": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99), latency.max,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.errors.status))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_http(url: str, proc, timeout: float = 300):
    import httpx
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None: raise RuntimeError(f'server exited ({proc.returncode}) before {url} answered')
        try:
            if httpx.get(url, timeout=5).status_code == 200: return time.time() - t0
        except httpx.TransportError: pass
        time.sleep(0.3)
    raise TimeoutError(url)


def make_model(project: Path):
    "Train and log the model; returns its runs:/ URI and the training matrix."
    import mlflow
    import numpy as np
    import pandas as pd
    import sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    mlflow.set_tracking_uri(f'sqlite:///{project}/.mlnb/mlflow.db')
    mlflow.set_experiment(experiment_id=mlflow.create_experiment('bench', artifact_location=(project / '.mlnb' / 'artifacts').as_uri()))
    X = np.random.default_rng(0).normal(size=(2000, 20))
    y = (X @ np.linspace(-1, 1, 20) + 0.3 * np.random.default_rng(1).normal(size=2000) > 0).astype(int)
    m = LogisticRegression().fit(X, y)
    df = pd.DataFrame(X, columns=COLS)
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(m, name='model', signature=infer_signature(df.head(10), m.predict(X[:10])),
                                 pip_requirements=[f'scikit-learn=={sklearn.__version__}'])
    return f'runs:/{run.info.run_id}/model', X


def wrk(url: str, body: Path, conns: int, seconds: float, lua: Path) -> dict:
    out = subprocess.run(['wrk', '-t1', f'-c{conns}', f'-d{max(1, round(seconds))}s', '--timeout', '10s', '-s', str(lua), url],
                         capture_output=True, text=True, env={**os.environ, 'BODY': str(body)}, timeout=seconds + 60)
    line = [x for x in out.stdout.splitlines() if x.startswith('{"requests"')]
    if not line: raise RuntimeError(f'wrk printed no summary: {out.stdout}\n{out.stderr}')
    r = json.loads(line[-1])
    return {'req_s': round(r['requests'] / r['seconds'], 1), 'p50_ms': r['p50_us'] / 1000, 'p99_ms': r['p99_us'] / 1000,
            'max_ms': r['max_us'] / 1000, 'errors': r['socket_errors'] + r['non200'], 'requests': r['requests']}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seconds', type=float, default=10)
    ap.add_argument('--repeat', type=int, default=1, help='Runs per server and setting; the median (by req/s) is reported.')
    ap.add_argument('--no-log', action='store_true', help='Run mlnb with --log-sample 0 (no request log).')
    a = ap.parse_args()
    if not shutil.which('wrk'): sys.exit('bench/serve.py needs wrk (apt-get install wrk)')
    import httpx
    import mlflow
    import numpy as np
    import pandas as pd
    env = {**os.environ, 'PATH': f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        project = d / 'proj'
        (project / '.mlnb').mkdir(parents=True)
        (project / 'mlnb.yaml').write_text('name: bench\n')
        uri, X = make_model(project)
        env['MLFLOW_TRACKING_URI'] = mlflow.get_tracking_uri()
        want = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame(X[:200], columns=COLS)).tolist()
        ports = {'mlflow': free_port(), 'mlnb': free_port()}
        logs = {k: open(d / f'{k}.log', 'w') for k in ports}
        cmds = {'mlflow': [str(BIN / 'mlflow'), 'models', 'serve', '-m', uri, '--env-manager', 'local', '-h', '127.0.0.1',
                           '-p', str(ports['mlflow']), '-w', '1'],
                'mlnb': [sys.executable, '-c', 'from mlnb.cli import main; main()', 'serve', uri, '--project', str(project),
                         '--port', str(ports['mlnb']), '--workers', '1', *(['--log-sample', '0'] if a.no_log else [])]}
        procs, start_s, probe = {}, {}, {'mlflow': 'ping', 'mlnb': 'ready'}
        try:
            for k in ports:  # one after the other: a startup has the machine to itself
                procs[k] = subprocess.Popen(cmds[k], stdout=logs[k], stderr=subprocess.STDOUT, env=env, cwd=project)
                start_s[k] = round(wait_http(f'http://127.0.0.1:{ports[k]}/{probe[k]}', procs[k]), 1)
            urls = {k: f'http://127.0.0.1:{p}/invocations' for k, p in ports.items()}
            same = True
            for url in urls.values():  # same predictions: 200 rows in 100-row batches, and one row alone
                got = []
                for i in (0, 100):
                    r = httpx.post(url, json={'dataframe_split': {'columns': COLS, 'data': X[i:i + 100].tolist()}}, timeout=60)
                    got += r.json()['predictions']
                one = httpx.post(url, json={'dataframe_split': {'columns': COLS, 'data': X[:1].tolist()}}).json()['predictions']
                same = same and got == want and one == want[:1]
            bodies = {}
            for n in (1, 100):
                bodies[n] = d / f'body{n}.json'
                bodies[n].write_text(json.dumps({'dataframe_split': {'columns': COLS, 'data': X[1000:1000 + n].tolist()}}))
            lua = d / 'post.lua'
            lua.write_text(WRK_LUA)
            for k in urls: wrk(urls[k], bodies[1], 8, 3, lua)  # warm-up
            results, order = {}, ['mlflow', 'mlnb']
            for rows, conns in ((1, 1), (1, 8), (100, 1), (100, 8)):
                key = f'{rows}row_{conns}conn'
                runs = {k: [] for k in order}
                for _ in range(a.repeat):
                    for k in order: runs[k].append(wrk(urls[k], bodies[rows], conns, a.seconds, lua))
                    order.reverse()  # alternate who goes first
                # the run with the median throughput of each server
                r = results[key] = {k: sorted(v, key=lambda x: x['req_s'])[len(v) // 2] for k, v in runs.items()}
                r['ratio_req_s'] = round(r['mlnb']['req_s'] / max(r['mlflow']['req_s'], 1e-9), 1)
                r['ratio_p99'] = round(r['mlflow']['p99_ms'] / max(r['mlnb']['p99_ms'], 1e-9), 1)
            ready = httpx.get(f"http://127.0.0.1:{ports['mlnb']}/ready").json()
        finally:
            for p in procs.values():
                p.terminate()
                p.wait(60)
            for f in logs.values(): f.close()
    print(json.dumps({
        'bench': 'serve', 'model': 'LogisticRegression, 20 double features, signature', 'same_predictions': same,
        'seconds_per_setting': a.seconds, 'repeat': a.repeat, 'load_generator': 'wrk -t1', 'mlnb_path': ready['models'][0]['path'],
        'mlnb_request_log': not a.no_log, 'startup_s': start_s, 'results': results,
        'target': {'ratio_req_s_8conn': '>= 10', 'mlnb_p99_ms_8conn': '<= 10'},
        'mlflow_version': mlflow.__version__, 'cpus': os.cpu_count(), 'load_avg_1m': round(os.getloadavg()[0], 2),
        'numpy': np.__version__}))


if __name__ == '__main__':
    main()
