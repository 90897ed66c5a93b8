"""`mlnb export airflow`: the DAG file loads in a real Airflow `DagBag` (in a virtualenv of its own, since Airflow's pins
clash with ours) with the spec's task graph and schedule, and a task's command really runs its step through mlnb."""
import fcntl
import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import make_notebook, need

from mlnb.pipeline.spec import load_pipeline
from mlnb.schedule.airflow import MARKER, mlnb_takes_retries

AIRFLOW = '3.3.2'   # the Airflow the test loads DAG files with; the DAG file itself also imports on Airflow 2
BIN = Path(sys.executable).parent
ENV = {**os.environ, 'MLFLOW_DISABLE_TELEMETRY': 'true'}


def mlnb(*args, cwd=None, env=None, timeout=300):
    return subprocess.run([str(BIN/'mlnb'), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env or ENV)


def _build_airflow_venv(venv: Path) -> str:
    "Create `venv` with Airflow in it (once: a marker file says it is complete); '' when done, else why it failed."
    ok = venv/'.mlnb-airflow-ok'
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent/f'.{venv.name}.lock', 'w') as lock:  # two pytest processes build it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ok.is_file() and ok.read_text() == AIRFLOW: return ''
        shutil.rmtree(venv, ignore_errors=True)
        py, t0 = venv/'bin'/'python', time.time()
        uv = shutil.which('uv', path=str(BIN)) or shutil.which('uv')
        steps = ([[uv, 'venv', '--quiet', '--python', sys.executable, str(venv)],
                  [uv, 'pip', 'install', '--quiet', '--python', str(py), f'apache-airflow=={AIRFLOW}']] if uv else
                 [[sys.executable, '-m', 'venv', str(venv)], [str(py), '-m', 'pip', 'install', '-q', f'apache-airflow=={AIRFLOW}']])
        for cmd in steps:
            try: r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
            except subprocess.TimeoutExpired: return f'{shlex.join(cmd)} took over 20 minutes'
            if r.returncode: return f'{shlex.join(cmd)} failed: {r.stderr.strip()[-2000:]}'
        r = subprocess.run([str(py), '-c', 'import airflow; print(airflow.__version__)'], capture_output=True, text=True, timeout=300)
        if r.stdout.strip() != AIRFLOW: return f'Airflow does not import in {venv}: {r.stderr.strip()[-2000:]}'
        ok.write_text(AIRFLOW)
        print(f'\nbuilt the Airflow {AIRFLOW} virtualenv {venv} in {time.time() - t0:.1f}s', file=sys.stderr)
        return ''


@pytest.fixture(scope='session')
def airflow_python():
    "The python of a virtualenv with Airflow: $MLNB_AIRFLOW_VENV, else ~/.cache/mlnb-airflow-<version>; built when missing."
    venv = Path(os.environ.get('MLNB_AIRFLOW_VENV') or Path.home()/'.cache'/f'mlnb-airflow-{AIRFLOW}').expanduser()
    why = _build_airflow_venv(venv)
    need('airflow', not why, why or 'ok')
    return venv/'bin'/'python'


# Load every DAG file of a folder as the scheduler does and describe what came out, as JSON. Runs in the Airflow venv.
INSPECT = textwrap.dedent('''
    import json, sys
    try: from airflow.dag_processing.dagbag import DagBag  # Airflow 3 (airflow.models.dagbag.DagBag is a deprecated shim)
    except ImportError: from airflow.models.dagbag import DagBag  # Airflow 2
    import airflow
    bag = DagBag(dag_folder=sys.argv[1])
    out = {"airflow": airflow.__version__, "import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
    for dag in bag.dags.values():
        td = lambda x: x.total_seconds() if x is not None else None
        out["dags"][dag.dag_id] = {
            "schedule": dag.schedule if isinstance(dag.schedule, (str, type(None))) else repr(dag.schedule),
            "timetable": type(dag.timetable).__name__, "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
            "tags": sorted(dag.tags), "fileloc": dag.fileloc,
            "tasks": {t.task_id: {"operator": type(t).__module__ + "." + type(t).__name__,
                                  "upstream": sorted(t.upstream_task_ids), "downstream": sorted(t.downstream_task_ids),
                                  "bash_command": t.bash_command,
                                  "rendered": t.render_template(t.bash_command, {"ds": "2026-01-02"}),
                                  "retries": t.retries, "retry_delay": td(t.retry_delay),
                                  "retry_exponential_backoff": float(t.retry_exponential_backoff),
                                  "execution_timeout": td(t.execution_timeout)} for t in dag.tasks}}
    print("MLNB-JSON" + json.dumps(out))
''')


def inspect_dags(python: Path, folder: Path, home: Path) -> dict:
    env = {**ENV, 'AIRFLOW_HOME': str(home), 'AIRFLOW__CORE__LOAD_EXAMPLES': 'False', 'AIRFLOW__CORE__DAGS_FOLDER': str(folder)}
    env.pop('PYTHONPATH', None)
    r = subprocess.run([str(python), '-c', INSPECT, str(folder)], capture_output=True, text=True, timeout=300, env=env, cwd=home)
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(x for x in r.stdout.splitlines() if x.startswith('MLNB-JSON'))
    return json.loads(line[len('MLNB-JSON'):])


ODD = 'publish-report'   # dashes: fine for mlnb, Airflow and `${step.key}` references alike
ODD_ID = 'publish-report'
ODD_DIR = "odd {{ ds }} it's"   # a project folder with Jinja and a quote in its name


def nightly_project(project: Path):
    "Five steps, two parallel branches (left, right), a gate and a schedule."
    make_notebook(project/'prep.ipynb', 'n: int = 3', 'import mlnb\nmlnb.log_metric("total", n * 2)')
    make_notebook(project/'branch.ipynb', 'x: float = 0.0', 'import mlnb\nmlnb.log_metric("x", x)')
    make_notebook(project/'merge.ipynb', 'a: str = ""', 'print(a)')
    (project/'mlnb.yaml').write_text(textwrap.dedent(f'''
        name: testproj
        pipelines:
          nightly:
            schedule: "30 3 * * 1-5"
            steps:
              prep:  {{notebook: prep.ipynb, params: {{n: 4}}, retries: 1, retry_delay: 2}}
              left:  {{notebook: branch.ipynb, upstream: [prep], params: {{x: "${{prep.metrics.total}}"}}, timeout: 60}}
              right: {{notebook: branch.ipynb, upstream: [prep], params: {{x: 2.5}}, gate: true}}
              merge: {{notebook: merge.ipynb, upstream: [left, right], params: {{a: "${{left.run_id}}"}}}}
              "{ODD}": {{notebook: merge.ipynb, upstream: [merge]}}
        '''))


def test_exported_dag_loads_in_airflow_and_runs_a_step(project, tmp_path, airflow_python):
    nightly_project(project)
    r = mlnb('export', 'airflow', 'nightly', '-o', 'dags', cwd=project)
    assert r.returncode == 0, r.stderr
    f = project/'dags'/'mlnb_nightly.py'
    assert f'wrote {f}: 5 tasks, schedule 30 3 * * 1-5' in r.stdout
    assert f.read_text().startswith(MARKER + '\n') and 'import mlnb' not in f.read_text()

    # the same pipeline exported from a folder whose name holds Jinja and a quote, into a subfolder the DagBag also scans
    odd = tmp_path/ODD_DIR
    shutil.copytree(project, odd, ignore=shutil.ignore_patterns('dags', '.mlnb'))
    r = mlnb('export', 'airflow', 'nightly', '--project', odd, '-o', f.parent/'odd', '--dag-id', 'mlnb_nightly_odd', cwd=tmp_path)
    assert r.returncode == 0, r.stderr

    home = tmp_path/'airflow-home'
    home.mkdir()
    t0 = time.time()
    got = inspect_dags(airflow_python, f.parent, home)
    parse_s = time.time() - t0
    assert got['airflow'] == AIRFLOW
    assert got['import_errors'] == {}
    assert sorted(got['dags']) == ['mlnb_nightly', 'mlnb_nightly_odd']
    for t in got['dags']['mlnb_nightly_odd']['tasks'].values():
        assert t['bash_command'].startswith('{% raw %}') and 'odd {{ ds }}' in t['rendered']
        assert shlex.split(t['rendered'])[1] == str(odd) and shlex.split(t['rendered'])[9:11] == ['--project', str(odd)]
    dag = got['dags']['mlnb_nightly']
    assert (dag['schedule'], dag['catchup'], dag['max_active_runs'], dag['tags']) == ('30 3 * * 1-5', False, 1, ['mlnb'])
    assert dag['timetable'] in ('CronTriggerTimetable', 'CronDataIntervalTimetable')
    assert Path(dag['fileloc']) == f

    # the task graph is the spec's: ids are the step names (cleaned for Airflow where they must be)
    p = load_pipeline('nightly', project)
    tid = {n: n for n in p.steps} | {ODD: ODD_ID}
    tasks = dag['tasks']
    assert set(tasks) == set(tid.values())
    assert {t: v['upstream'] for t, v in tasks.items()} == {tid[n]: sorted(tid[u] for u in st.upstream) for n, st in p.steps.items()}
    assert {t: v['downstream'] for t, v in tasks.items()} == {
        'prep': ['left', 'right'], 'left': ['merge'], 'right': ['merge'], 'merge': [ODD_ID], ODD_ID: []}

    # each task runs exactly its step through this environment's mlnb, and Airflow's templating leaves the command alone;
    # the library learns from the pipeline runner whether `mlnb pipeline run` takes --retries: the command must agree
    own = mlnb_takes_retries()
    run_help = mlnb('pipeline', 'run', '--help', cwd=project)
    assert run_help.returncode == 0 and ('--retries' in run_help.stdout) == own, run_help.stdout
    for n, st in p.steps.items():
        t = tasks[tid[n]]
        assert t['operator'] == 'airflow.providers.standard.operators.bash.BashOperator'
        words = shlex.split(t['rendered'])
        assert words[:4] == ['cd', str(project), '&&', str(BIN/'mlnb')]
        assert words[4:11] == ['pipeline', 'run', 'nightly', '--only', n, '--project', str(project)]
        assert words[11:] == (['--retries', '0'] if own else [])
        assert t['retries'] == (st.retries if own else 0)  # retried by Airflow, or by mlnb inside the task, never both
        assert t['retry_delay'] == st.retry_delay
        assert t['retry_exponential_backoff'] == (2.0 if own and st.retries else 0)  # 2.0: doubling, as mlnb's own waits
    assert tasks['prep']['bash_command'] == tasks['prep']['rendered']
    assert tasks['left']['execution_timeout'] == 60 * 3 + 120  # 2 code cells + the injected parameters, + start-up
    assert tasks['prep']['execution_timeout'] is None

    # the strongest check: run the first task's command as an Airflow worker would (elsewhere, with a bare PATH); the step
    # is then in mlnb's cache, where the `--only` of the tasks downstream finds its values
    worker_env = {**ENV, 'PATH': '/usr/bin:/bin'}
    t0 = time.time()
    run = subprocess.run(['bash', '-c', tasks['prep']['rendered']], cwd=tmp_path, env=worker_env, capture_output=True, text=True,
                         timeout=600)
    step_s = time.time() - t0
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    show = mlnb('pipeline', 'show', 'nightly', cwd=project)
    assert show.returncode == 0, show.stderr
    rows = {ln.split()[0]: ln for ln in show.stdout.splitlines()[1:]}
    assert rows['prep'].rstrip().endswith('cached'), show.stdout
    assert 'never ran' in rows['left']
    cache = json.loads((project/'.mlnb'/'cache'/'nightly.json').read_text())
    assert cache['prep']['values']['metrics'] == {'total': 8.0}   # n=4 from mlnb.yaml: what ${prep.metrics.total} will give left
    print(f'\nDagBag parse {parse_s:.1f}s, one step through its task command {step_s:.1f}s', file=sys.stderr)


def test_export_refuses_to_overwrite_and_bad_input(project):
    nightly_project(project)
    dags = project/'dags'
    dags.mkdir()
    mine = dags/'mlnb_nightly.py'
    mine.write_text('from airflow import DAG  # written by hand\n')
    r = mlnb('export', 'airflow', 'nightly', '-o', dags, cwd=project)
    assert r.returncode == 2 and f'mlnb: error: {mine} exists and was not written by mlnb export' in r.stderr
    assert mine.read_text() == 'from airflow import DAG  # written by hand\n'
    r = mlnb('export', 'airflow', 'nightly', '-o', dags, '--force', '--mlnb-command', '/opt/venv/bin/mlnb', '--dag-id', 'nightly.v2')
    assert r.returncode == 0, r.stderr
    src = mine.read_text()
    assert "dag_id='nightly.v2'" in src and "&& /opt/venv/bin/mlnb pipeline run nightly --only prep" in src
    r = mlnb('export', 'airflow', 'nightly', '-o', dags, cwd=project)  # its own file: replaced without --force
    assert r.returncode == 0 and "dag_id='mlnb_nightly'" in mine.read_text()

    r = mlnb('export', 'airflow', 'nighty', '-o', dags, cwd=project)
    assert r.returncode == 2 and "no pipeline 'nighty' (did you mean 'nightly'?)" in r.stderr
    r = mlnb('export', 'airflow', 'nightly', '--dag-id', 'a dag', '-o', dags, cwd=project)
    assert r.returncode == 2 and "dag id 'a dag' is not a valid Airflow id" in r.stderr
    (project/'mlnb.yaml').write_text((project/'mlnb.yaml').read_text().replace('upstream: [merge]', 'upstream: [merg]'))
    r = mlnb('export', 'airflow', 'nightly', '-o', dags, cwd=project)
    assert r.returncode == 2 and "unknown upstream step 'merg' (did you mean 'merge'?)" in r.stderr
    assert "dag_id='mlnb_nightly'" in mine.read_text()   # a failed export leaves the last good file

