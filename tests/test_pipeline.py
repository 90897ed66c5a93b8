"""Pipelines on a real LocalCluster with real kernels: parallel branches, the incremental cache, retries, failures that
stop only their downstream, gates, webhooks, `--from`/`--only`/`--force`, and the CLI."""
import json
import subprocess
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import nbformat
import pytest
from conftest import make_notebook
from mlflow import MlflowClient

from mlnb.pipeline.cache import plan
from mlnb.pipeline.runner import run_pipeline, warm_worker
from mlnb.pipeline.spec import PipelineError


@pytest.fixture(scope='module')
def client(dask_client):
    "conftest's two-worker LocalCluster, every worker warmed up first."
    dask_client.run(warm_worker)  # as the runner does with a cluster it connects; here the timing test needs every worker ready
    return dask_client


STEP = ('import time, json, os\n'
        'from pathlib import Path\n'
        't0 = time.time()\n'
        'time.sleep(pause)\n'
        'Path("out").mkdir(exist_ok=True)\n'
        'Path(f"out/{name}.json").write_text(json.dumps({"name": name, "src": src, "score": score, "start": t0, "end": time.time()}))\n'
        'import mlnb\n'
        'mlnb.log_metric("score", len(name) + score)')

PARAMS = 'name = "x"\nsrc = ""\nscore: float = 0.0\npause: float = 0.0'


def five_step_project(project: Path, extra: str = ''):
    for n in ('ingest', 'left', 'right', 'join', 'report'):
        make_notebook(project/f'{n}.ipynb', PARAMS, 'md:# ' + n, STEP)
    (project/'raw.csv').write_text('a,b\n1,2\n')
    (project/'mlnb.yaml').write_text(textwrap.dedent(f'''
        name: pipes
        pipelines:
          five:
            schedule: "0 2 * * *"
            steps:
              ingest: {{notebook: ingest.ipynb, params: {{name: ingest}}, inputs: [raw.csv], products: [out/ingest.json]}}
              left:   {{notebook: left.ipynb, upstream: [ingest], params: {{name: left, src: "${{ingest.output}}", pause: 3}}}}
              right:  {{notebook: right.ipynb, upstream: [ingest], params: {{name: right, score: "${{ingest.metrics.score}}", pause: 3}}}}
              join:   {{notebook: join.ipynb, upstream: [left, right], params: {{name: join, src: "${{left.run_id}}"}}}}
              report: {{notebook: report.ipynb, upstream: [join], params: {{name: report, score: "${{join.metrics.score}}"}}}}
        {extra}'''))


def edit_cell(path: Path, index: int, source: str):
    nb = nbformat.read(path, as_version=4)
    nb.cells[index].source = source
    nbformat.write(nb, path)


def statuses(res) -> dict: return {n: s.status for n, s in res.steps.items()}


def test_five_steps_parallel_branches_and_the_cache(project, client):
    five_step_project(project)
    first = run_pipeline('five', project, client=client)
    assert first.status == 'FINISHED', first.table()
    assert statuses(first) == dict.fromkeys(['ingest', 'left', 'right', 'join', 'report'], 'FINISHED')
    # the two branches ran at the same time, on the cluster
    left, right = (json.loads((project/'out'/f'{n}.json').read_text()) for n in ('left', 'right'))
    assert left['start'] < right['end'] and right['start'] < left['end'], (left, right)
    # upstream values arrive typed: a float metric, a path, a run id
    assert right['score'] == pytest.approx(len('ingest'))
    assert left['src'] == first.steps['ingest'].output and Path(left['src']).is_file()
    assert json.loads((project/'out'/'join.json').read_text())['src'] == first.steps['left'].run_id
    # MLflow: a parent run for the pipeline, a child run per step
    mc = MlflowClient(f'sqlite:///{project}/.mlnb/mlflow.db')
    parent = mc.get_run(first.run_id)
    assert parent.data.tags['mlnb.kind'] == 'pipeline' and parent.data.tags['mlnb.status'] == 'FINISHED'
    kids = mc.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{first.run_id}'")
    assert sorted(r.data.tags['mlnb.step'] for r in kids) == ['ingest', 'join', 'left', 'report', 'right']

    again = run_pipeline('five', project, client=client)
    assert again.status == 'FINISHED' and set(statuses(again).values()) == {'CACHED'}, again.table()
    assert again.executed == [] and again.duration < 5
    assert again.steps['report'].run_id == first.steps['report'].run_id

    assert nbformat.read(project/'left.ipynb', as_version=4).cells[1].cell_type == 'markdown'
    edit_cell(project/'left.ipynb', 1, '# left\n\nNow with documentation.')  # prose only
    third = run_pipeline('five', project, client=client)
    assert set(statuses(third).values()) == {'CACHED'}, 'a markdown edit re-runs nothing'

    edit_cell(project/'left.ipynb', 2, STEP + '\nprint("changed")')
    assert dict(plan('five', project)[i][::3] for i in range(5)) == {
        'ingest': 'cached', 'left': 'runs: notebook changed', 'right': 'cached', 'join': 'runs: upstream left runs',
        'report': 'runs: upstream join runs'}
    fourth = run_pipeline('five', project, client=client)
    assert statuses(fourth) == {'ingest': 'CACHED', 'left': 'FINISHED', 'right': 'CACHED', 'join': 'FINISHED', 'report': 'FINISHED'}

    (project/'raw.csv').write_text('a,b\n1,3\n')  # a declared input changed: ingest and all of its downstream
    fifth = run_pipeline('five', project, client=client)
    assert set(statuses(fifth).values()) == {'FINISHED'}, fifth.table()

    (project/'out'/'ingest.json').unlink()  # a product is gone: that step re-runs (and writes it again)
    sixth = run_pipeline('five', project, client=client)
    assert sixth.steps['ingest'].status == 'FINISHED' and (project/'out'/'ingest.json').exists()


def test_from_only_force(project, client):
    five_step_project(project)
    with pytest.raises(PipelineError, match='never succeeded'):
        run_pipeline('five', project, only='join', client=client)
    assert run_pipeline('five', project, client=client).ok
    r = run_pipeline('five', project, from_step='join', client=client)
    assert statuses(r) == {'ingest': 'CACHED', 'left': 'CACHED', 'right': 'CACHED', 'join': 'FINISHED', 'report': 'FINISHED'}
    r = run_pipeline('five', project, only='right', client=client)
    assert r.steps['right'].status == 'FINISHED' and {s.status for n, s in r.steps.items() if n != 'right'} == {'NOT_SELECTED'}
    r = run_pipeline('five', project, force=True, client=client)
    assert set(statuses(r).values()) == {'FINISHED'}
    with pytest.raises(PipelineError, match="no step 'jion' \\(did you mean 'join'\\?\\)"):
        run_pipeline('five', project, from_step='jion', client=client)


class Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        Hook.received.append((self.headers['Content-Type'], json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a): pass


@pytest.fixture
def webhook():
    Hook.received = []
    srv = HTTPServer(('127.0.0.1', 0), Hook)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f'http://127.0.0.1:{srv.server_port}/hook', Hook.received
    srv.shutdown()


def test_retries_failures_gates_and_webhooks(project, client, webhook):
    url, received = webhook
    make_notebook(project/'ok.ipynb', 'tag = ""', 'print(tag)')
    make_notebook(project/'flaky.ipynb', 'tag = ""',
                  'from pathlib import Path\np = Path("flaky.count")\nn = int(p.read_text()) if p.exists() else 0\n'
                  'p.write_text(str(n + 1))\nassert n >= 1, "first attempt fails"')
    make_notebook(project/'broken.ipynb', 'tag = ""', 'print("before")', 'raise ValueError("bad data")')
    (project/'mlnb.yaml').write_text(textwrap.dedent(f'''
        name: pipes
        pipelines:
          flaky:
            steps:
              a: {{notebook: flaky.ipynb, retries: 2, retry_delay: 0.2}}
              b: {{notebook: ok.ipynb, upstream: [a]}}
          partial:
            notify: {{webhook: "{url}"}}
            steps:
              root: {{notebook: ok.ipynb}}
              bad: {{notebook: broken.ipynb, upstream: [root]}}
              after_bad: {{notebook: ok.ipynb, upstream: [bad]}}
              good: {{notebook: ok.ipynb, upstream: [root], params: {{tag: good}}}}
          gated:
            notify: {{webhook: "{url}", on: [gated]}}
            steps:
              check: {{notebook: broken.ipynb, gate: true}}
              train: {{notebook: ok.ipynb, upstream: [check]}}
              other: {{notebook: ok.ipynb, params: {{tag: other}}}}
    '''))
    r = run_pipeline('flaky', project, client=client)
    assert r.ok and r.steps['a'].attempts == 2, r.table()
    assert (project/'flaky.count').read_text() == '2'
    mc = MlflowClient(f'sqlite:///{project}/.mlnb/mlflow.db')
    assert mc.get_run(r.steps['a'].run_id).data.tags['mlnb.attempts'] == '2'  # both attempts: one MLflow run

    r = run_pipeline('partial', project, client=client)
    assert r.status == 'FAILED'
    assert statuses(r) == {'root': 'FINISHED', 'bad': 'FAILED', 'after_bad': 'SKIPPED', 'good': 'FINISHED'}
    bad = r.steps['bad']
    assert bad.cell_index is not None and 'ValueError: bad data' in bad.message and Path(bad.output).is_file()
    table = r.table()
    assert 'bad' in table and 'ValueError: bad data' in table and bad.output in table
    assert len(received) == 1
    ctype, body = received[0]
    assert ctype == 'application/json' and body['pipeline'] == 'partial' and body['status'] == 'FAILED'
    assert body['failed_steps'][0]['step'] == 'bad' and body['failed_steps'][0]['cell_index'] == bad.cell_index
    assert body['failed_steps'][0]['output_notebook'] == bad.output

    r = run_pipeline('gated', project, client=client)
    assert r.status == 'GATED', r.table()
    assert r.steps['check'].status == 'GATED' and r.steps['train'].status == 'SKIPPED'
    assert mc.get_run(r.run_id).data.tags['mlnb.status'] == 'GATED'
    assert len(received) == 2 and received[1][1]['status'] == 'GATED'


def test_sweep_step_selects_the_best_point(project, client):
    make_notebook(project/'train.ipynb', 'C: float = 1.0', 'import mlnb\nmlnb.log_metric("auc", 1 - abs(C - 0.5))')
    make_notebook(project/'use.ipynb', 'best_c: float = 0.0\nrun: str = ""\nauc: float = 0.0',
                  'from pathlib import Path\nPath("best.txt").write_text(f"{best_c} {run} {auc}")')
    (project/'mlnb.yaml').write_text(textwrap.dedent('''
        name: pipes
        pipelines:
          tune:
            steps:
              train: {notebook: train.ipynb, sweep: {grid: {C: [0.1, 0.5, 2.0]}}, select: {metric: auc, mode: max}}
              use: {notebook: use.ipynb, upstream: [train],
                    params: {best_c: "${train.params.C}", run: "${train.run_id}", auc: "${train.metrics.auc}"}}
    '''))
    r = run_pipeline('tune', project, client=client)
    assert r.ok, r.table()
    c, run, auc = (project/'best.txt').read_text().split()
    assert float(c) == 0.5 and float(auc) == 1.0 and run == r.steps['train'].run_id
    mc = MlflowClient(f'sqlite:///{project}/.mlnb/mlflow.db')
    best = mc.get_run(run)
    sweep_parent = mc.get_run(best.data.tags['mlflow.parentRunId'])
    assert sweep_parent.data.tags['mlnb.kind'] == 'sweep' and sweep_parent.data.tags['mlflow.parentRunId'] == r.run_id
    assert set(statuses(run_pipeline('tune', project, client=client)).values()) == {'CACHED'}


def test_cli_run_show_and_bad_specs(project):
    five_step_project(project)
    env_py = ['mlnb']  # the venv's console script (conftest puts it first on PATH)
    show = subprocess.run([*env_py, 'pipeline', 'show', 'five'], cwd=project, capture_output=True, text=True)
    assert show.returncode == 0 and 'never ran' in show.stdout and 'upstream ingest runs' in show.stdout, show.stderr
    run = subprocess.run([*env_py, 'pipeline', 'run', 'five', '--json'], cwd=project, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out['status'] == 'FINISHED' and set(out['steps']) == {'ingest', 'left', 'right', 'join', 'report'}
    show = subprocess.run([*env_py, 'pipeline', 'show', 'five'], cwd=project, capture_output=True, text=True)
    assert show.stdout.count('cached') == 5, show.stdout
    again = subprocess.run([*env_py, 'pipeline', 'run', 'five'], cwd=project, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count('CACHED') >= 5 and 'cache hit' in again.stdout

    (project/'mlnb.yaml').write_text('pipelines:\n  bad:\n    steps:\n      a: {notebook: nope.ipynb, upstream: [b]}\n')
    bad = subprocess.run([*env_py, 'pipeline', 'run', 'bad'], cwd=project, capture_output=True, text=True)
    assert bad.returncode == 2 and 'nope.ipynb does not exist' in bad.stderr and "unknown upstream step 'b'" in bad.stderr
    assert not (project/'.mlnb'/'cache'/'bad.json').exists()
    missing = subprocess.run([*env_py, 'pipeline', 'run', 'five'], cwd=project, capture_output=True, text=True)
    assert missing.returncode == 2 and "no pipeline 'five'" in missing.stderr
