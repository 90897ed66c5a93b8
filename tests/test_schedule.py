"""Schedules end to end: the `mlnb schedule` commands, and a real `mlnb scheduler` daemon running real notebooks: runs tagged
with their trigger, never two runs of one schedule at once, and a daemon killed with SIGKILL and restarted (its schedules
all there, the interrupted run LOST, missed fire times handled by the grace and coalesce policy, nothing run twice)."""
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import make_notebook

MLNB = str(Path(sys.executable).parent/'mlnb')
DONE = ('FINISHED', 'FAILED', 'GATED')


def mlnb(*args, cwd=None, timeout=120):
    return subprocess.run([MLNB, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def ok(*args, cwd=None):
    r = mlnb(*args, cwd=cwd)
    assert r.returncode == 0, f'mlnb {" ".join(map(str, args))}: {r.stdout}{r.stderr}'
    return r


def bad(*args, cwd=None, code=2):
    "A command that must fail with one line on stderr; returns that line."
    r = mlnb(*args, cwd=cwd)
    assert r.returncode == code, f'expected exit {code}: {r.stdout}{r.stderr}'
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('mlnb: error: '), r.stderr
    return lines[0]


def iso(t): return datetime.fromtimestamp(t, timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def db_rows(project, sql, *args):
    db = project/'.mlnb'/'scheduler.db'
    if not db.exists(): return []
    with closing(sqlite3.connect(db, timeout=30)) as con:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute(sql, args)]


def history(project, name): return db_rows(project, 'SELECT * FROM history WHERE schedule=? ORDER BY fire_time', name)
def names(project): return [r['name'] for r in db_rows(project, 'SELECT name FROM schedules ORDER BY name')]
def done(project, name): return [r for r in history(project, name) if r['status'] in DONE]


def start_daemon(project, *args):
    log = open(project/'daemon.log', 'a')
    env = {**os.environ, 'MLFLOW_DISABLE_TELEMETRY': 'true'}
    return subprocess.Popen([MLNB, 'scheduler', '--project', str(project), *args], cwd=project, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def stop_daemon(p, timeout=90):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try: p.wait(timeout)
        except subprocess.TimeoutExpired: p.kill(); p.wait(10)
    return p.returncode


def wait_for(cond, timeout, what, project, daemon=None, every=0.2):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v: return v
        if daemon is not None and daemon.poll() is not None: break
        time.sleep(every)
    log = (project/'daemon.log').read_text() if (project/'daemon.log').exists() else ''
    pytest.fail(f'{what}: not within {timeout}s (daemon exit code {daemon.poll() if daemon else None})\n{log[-4000:]}')


def no_overlap(rows):
    "Runs of one schedule, by start: each ended before the next started."
    runs = sorted((r for r in rows if r['status'] in (*DONE, 'LOST')), key=lambda r: r['started'])
    for a, b in zip(runs, runs[1:], strict=False):
        assert a['ended'] <= b['started'], f'runs overlap: {a} and {b}'
    return runs


def test_schedule_commands(project):
    nb = make_notebook(project/'nb.ipynb', 'x: int = 1  # a number\nword = "a"', 'print(x)')
    r = ok('schedule', 'add', 'nightly', '--notebook', nb, '-p', 'x', '3', '--cron', '0 2 * * *', '--tz', 'Europe/Paris', cwd=project)
    assert "schedule 'nightly' added: notebook nb.ipynb (x=3), cron '0 2 * * *' in Europe/Paris; next fire " in r.stdout
    assert ' 02:00:00 CE' in r.stdout and 'no scheduler is running' in r.stderr
    ok('schedule', 'add', 'often', '--notebook', 'nb.ipynb', '--cron', '*/5 * * * * *', '--tz', 'UTC', '--grace', '10',
       '--no-coalesce', cwd=project)
    ok('schedule', 'add', 'hourly', '--notebook', nb, '--cron', '@hourly', '--paused', '--project', project, cwd=project.parent)

    # bad input: exit 2, one line naming what is wrong, and nothing stored
    assert bad('schedule', 'add', 'b', '--notebook', nb, '--cron', '0 25 * * *', cwd=project) == \
        "mlnb: error: cron field 'hour': 25 is out of range 0-23"
    assert "cron field 'day_of_week': 'someday' is not a number" in bad('schedule', 'add', 'b', '--notebook', nb, '--cron',
                                                                        '0 2 * * someday', cwd=project)
    assert 'has 3 fields; expected 5' in bad('schedule', 'add', 'b', '--notebook', nb, '--cron', '0 2 *', cwd=project)
    assert "unknown time zone 'Mars/Olympus'" in bad('schedule', 'add', 'b', '--notebook', nb, '--cron', '0 2 * * *', '--tz',
                                                     'Mars/Olympus', cwd=project)
    assert bad('schedule', 'add', 'b', '--notebook', nb, '-p', 'x', 'many', '--cron', '0 2 * * *', cwd=project) == \
        f"mlnb: error: {nb}: parameter 'x' expects int, got 'many': not an integer"
    assert "unknown parameter 'xx'; did you mean 'x'?" in bad('schedule', 'add', 'b', '--notebook', nb, '-p', 'xx', '1', '--cron',
                                                             '0 2 * * *', cwd=project)
    assert "a schedule named 'nightly' already exists" in bad('schedule', 'add', 'nightly', '--notebook', nb, '--cron', '0 3 * * *',
                                                               cwd=project)
    assert 'does not exist' in bad('schedule', 'add', 'b', '--notebook', 'nope.ipynb', '--cron', '0 2 * * *', cwd=project)
    assert 'exactly one of --notebook and --pipeline' in bad('schedule', 'add', 'b', '--cron', '0 2 * * *', cwd=project)
    assert "schedule name 'b/c'" in bad('schedule', 'add', 'b/c', '--notebook', nb, '--cron', '0 2 * * *', cwd=project)
    assert names(project) == ['hourly', 'nightly', 'often']
    assert db_rows(project, 'SELECT * FROM history') == []

    lst = ok('schedule', 'list', cwd=project).stdout.splitlines()
    assert lst[0].split() == ['NAME', 'KIND', 'TARGET', 'CRON', 'TZ', 'STATE', 'NEXT', 'FIRE', 'LAST']
    assert lst[1].split()[:4] == ['hourly', 'notebook', 'nb.ipynb', '@hourly'] and lst[1].split()[5:7] == ['paused', '-']
    assert lst[2].split()[:9] == ['nightly', 'notebook', 'nb.ipynb', '(x=3)', '0', '2', '*', '*', '*']
    assert 'Europe/Paris  active' in lst[2] and lst[2].rstrip().endswith('-')
    assert 'scheduler: not running' in lst[-1]

    assert ok('schedule', 'pause', 'nightly', cwd=project).stdout.strip() == "schedule 'nightly' paused"
    assert ok('schedule', 'pause', 'nightly', cwd=project).stdout.strip() == "schedule 'nightly' was already paused"
    assert db_rows(project, "SELECT paused FROM schedules WHERE name='nightly'") == [{'paused': 1}]
    assert "schedule 'nightly' resumed; next fire " in ok('schedule', 'resume', 'nightly', cwd=project).stdout
    assert db_rows(project, "SELECT paused FROM schedules WHERE name='nightly'") == [{'paused': 0}]
    assert ok('schedule', 'history', 'nightly', cwd=project).stdout.strip() == "schedule 'nightly' has not fired yet"
    assert "no schedule named 'nighty'; known: hourly, nightly, often" in bad('schedule', 'history', 'nighty', cwd=project)
    assert "no schedule named 'nope'" in bad('schedule', 'pause', 'nope', cwd=project)
    ok('schedule', 'remove', 'often', cwd=project)
    assert "no schedule named 'often'" in bad('schedule', 'remove', 'often', cwd=project)
    assert names(project) == ['hourly', 'nightly']
    j = __import__('json').loads(ok('schedule', 'list', '--json', cwd=project).stdout)
    assert [(s['name'], s['params'], s['paused']) for s in j] == [('hourly', {}, True), ('nightly', {'x': '3'}, False)]


def test_stop_timeout_and_once(project):
    "On stop, running fires get --stop-timeout seconds, then are LOST; --once fires what is due, waits for it, and returns."
    from mlnb.schedule.daemon import Scheduler
    from mlnb.schedule.store import add_schedule
    nb = make_notebook(project/'nb.ipynb', 'x = 1')
    add_schedule('s', '* * * * * *', notebook=nb, tz='UTC', project=project)
    release, lines = threading.Event(), []
    def hold(s, t, cfg):
        release.wait(30)
        return 'FINISHED', 'r1', ''
    sch = Scheduler(project, stop_timeout=0.5, execute=hold, log=lines.append)
    th = threading.Thread(target=sch.serve)
    th.start()
    try: wait_for(lambda: db_rows(project, "SELECT * FROM history WHERE status='RUNNING'"), 30, 'a running fire', project)
    finally: sch.stop()
    t0 = time.time()
    th.join(10)
    assert not th.is_alive() and time.time() - t0 < 5
    release.set()
    time.sleep(0.5)  # the fire ends after all: too late, it stays LOST
    rows = history(project, 's')
    assert rows[-1]['status'] == 'LOST' and 'did not wait longer than 0.5s' in rows[-1]['message'], rows
    assert not (project/'.mlnb'/'scheduler.pid').read_text()

    time.sleep(1.1)
    Scheduler(project, execute=lambda s, t, cfg: ('FINISHED', 'r2', ''), log=lines.append).serve(once=True)
    rows = history(project, 's')
    assert rows[-1]['status'] == 'FINISHED' and rows[-1]['run_id'] == 'r2'
    assert [r['status'] for r in rows if r['status'] not in ('MISSED', 'COALESCED')] == ['LOST', 'FINISHED']


def test_daemon_runs_tagged_and_never_overlapping(project):
    from mlflow import MlflowClient
    fast = make_notebook(project/'fast.ipynb', 'x: int = 1', 'import mlnb\nmlnb.log_metric("y", x * 2)')
    slow = make_notebook(project/'slow.ipynb', 'secs: float = 0.0', 'import time\ntime.sleep(secs)')
    ok('schedule', 'add', 'fast', '--notebook', fast, '-p', 'x', '21', '--cron', '*/2 * * * * *', '--tz', 'UTC', cwd=project)
    # each run takes longer than the period: late fire times wait for the run, then run once (coalesced)
    ok('schedule', 'add', 'slow', '--notebook', slow, '-p', 'secs', '4', '--cron', '*/2 * * * * *', '--grace', '30', cwd=project)
    d = start_daemon(project)
    try:
        wait_for(lambda: len(done(project, 'fast')) >= 3 and len(done(project, 'slow')) >= 2, 120, 'fast and slow runs', project, d)
        assert 'already running' in bad('scheduler', '--project', project, code=1)
        ok('schedule', 'pause', 'fast', cwd=project)
        paused_at = time.time()
        # a schedule added while the daemon runs is picked up within a couple of seconds
        ok('schedule', 'add', 'later', '--notebook', fast, '-p', 'x', '5', '--cron', '*/3 * * * * *', '--tz', 'UTC', cwd=project)
        added_at = time.time()
        first = wait_for(lambda: done(project, 'later'), 60, 'a run of the schedule added later', project, d)[0]
        assert first['fire_time'] <= added_at + 4
        assert ok('schedule', 'list', cwd=project).stdout.splitlines()[-1] == f'scheduler: running, pid {d.pid}'
    finally:
        code = stop_daemon(d)
    log = (project/'daemon.log').read_text()
    assert code == 0, log
    assert 'mlnb scheduler: stopped' in log
    assert db_rows(project, "SELECT * FROM history WHERE status='RUNNING'") == []  # the daemon waited for the running fires
    assert db_rows(project, 'SELECT schedule, fire_time FROM history GROUP BY schedule, fire_time HAVING COUNT(*) > 1') == []

    client = MlflowClient(f"sqlite:///{project/'.mlnb'/'mlflow.db'}")
    fast_rows = history(project, 'fast')
    assert all(r['fire_time'] <= paused_at for r in fast_rows), 'fired after it was paused'
    for name, x in (('fast', '21'), ('later', '5')):
        rows = done(project, name)
        assert rows and all(r['status'] == 'FINISHED' and r['run_id'] for r in rows), rows
        for r in rows:
            run = client.get_run(r['run_id'])
            assert run.info.status == 'FINISHED'
            tags = run.data.tags
            assert (tags['mlnb.trigger'], tags['mlnb.schedule'], tags['mlnb.fire_time']) == (f'schedule:{name}', name, iso(r['fire_time']))
            assert run.data.params['x'] == x and run.data.metrics['y'] == int(x) * 2
            assert r['fire_time'] <= r['started'] <= run.info.start_time / 1000 + 1
    slow_rows = history(project, 'slow')
    runs = no_overlap(slow_rows)
    assert len(runs) >= 2 and all(r['status'] == 'FINISHED' for r in runs)
    merged = [r for r in slow_rows if r['status'] == 'COALESCED']
    assert merged, slow_rows  # fire times that came during a run were merged into the next one
    assert all('merged into the run of' in r['message'] for r in merged)
    h = ok('schedule', 'history', 'slow', '-n', 1000, cwd=project).stdout.splitlines()  # all: under load, over 20
    assert h[0].split() == ['FIRE', 'TIME', 'STATUS', 'RUN', 'ID', 'DURATION', 'MESSAGE']
    assert any(' FINISHED ' in ln and runs[0]['run_id'][:12] in ln for ln in h)


def test_daemon_killed_and_restarted(project):
    "The scheduler is SIGKILLed during a run; restarted, it keeps its schedules, marks the run LOST, handles missed fires by policy."
    from mlflow import MlflowClient
    slow = make_notebook(project/'slow.ipynb', 'secs: float = 0.0', 'import time\ntime.sleep(secs)')
    grace, period = 5, 2
    ok('schedule', 'add', 'tick', '--notebook', slow, '-p', 'secs', '4', '--cron', f'*/{period} * * * * *', '--tz', 'UTC',
       '--grace', grace, cwd=project)  # each run takes longer than the period
    ok('schedule', 'add', 'nightly', '--notebook', slow, '--cron', '0 2 * * *', '--tz', 'Europe/Paris', '--paused', cwd=project)
    ok('schedule', 'add', 'weekly', '--notebook', slow, '--cron', '@weekly', cwd=project)
    client = MlflowClient(f"sqlite:///{project/'.mlnb'/'mlflow.db'}")

    def mlflow_runs(state):
        exps = [e.experiment_id for e in client.search_experiments()]
        return [r for r in client.search_runs(exps, "tags.`mlnb.schedule` = 'tick'") if r.info.status == state] if exps else []

    d1 = start_daemon(project)
    try:
        running = wait_for(lambda: [r for r in history(project, 'tick') if r['status'] == 'RUNNING'], 90, 'a RUNNING fire', project, d1)
        wait_for(lambda: mlflow_runs('RUNNING'), 90, 'the MLflow run of the fire', project, d1, every=0.5)
        lost_fire = running[0]['fire_time']
        os.kill(d1.pid, signal.SIGKILL)  # mid-run: the notebook sleeps 4 s
        d1.wait(10)
    finally:
        if d1.poll() is None: d1.kill()
    time.sleep(3 * period + grace + 1)  # down long enough for fire times beyond the grace time and within it

    lst = ok('schedule', 'list', cwd=project).stdout.splitlines()
    assert [ln.split()[0] for ln in lst[1:4]] == ['nightly', 'tick', 'weekly']
    assert ' paused ' in lst[1] and ' active ' in lst[2] and ' active ' in lst[3]
    assert lst[-1].startswith('scheduler: not running')
    restart = time.time()
    d2 = start_daemon(project)
    try:
        wait_for(lambda: [r for r in done(project, 'tick') if r['fire_time'] > lost_fire], 90, 'a run after the restart', project, d2)
        wait_for(lambda: [r for r in history(project, 'tick') if r['status'] == 'LOST' and r['run_id']], 60,
                 'the lost MLflow run closed', project, d2)
    finally:
        code = stop_daemon(d2)
    log = (project/'daemon.log').read_text()
    assert code == 0, log
    rows = history(project, 'tick')
    assert db_rows(project, 'SELECT fire_time FROM history GROUP BY schedule, fire_time HAVING COUNT(*) > 1') == []
    fires = [r['fire_time'] for r in rows]
    assert fires == list(range(fires[0], fires[-1] + 1, period))  # every fire time handled once: none dropped, none twice
    assert not [r for r in rows if r['status'] == 'RUNNING']

    # the interrupted run: LOST, its MLflow run closed as FAILED
    lost = [r for r in rows if r['status'] == 'LOST']
    assert [r['fire_time'] for r in lost] == [lost_fire]
    assert 'killed or crashed' in lost[0]['message'] and lost[0]['ended'] >= restart
    assert client.get_run(lost[0]['run_id']).info.status == 'FAILED'
    assert not mlflow_runs('RUNNING')

    # the fire times missed while the daemon was down, decided at its restart
    mine = [r for r in rows if r['started'] >= restart]  # what the restarted daemon decided
    decided = min(r['started'] for r in mine)
    catch_up = [r for r in mine if r['fire_time'] <= decided]
    assert len(catch_up) >= 4, catch_up
    missed = [r for r in catch_up if r['status'] == 'MISSED']
    merged = [r for r in catch_up if r['status'] == 'COALESCED']
    ran = [r for r in catch_up if r['status'] in DONE]
    assert len(ran) == 1 and ran[0]['fire_time'] == max(r['fire_time'] for r in catch_up), catch_up  # once, for the latest
    assert missed and all(decided - r['fire_time'] > grace and 'before this scheduler started' in r['message'] for r in missed)
    assert merged and all(decided - r['fire_time'] <= grace and iso(ran[0]['fire_time']) in r['message'] for r in merged)
    assert len(missed) + len(merged) + 1 == len(catch_up)
    assert ran[0]['status'] == 'FINISHED' and ran[0]['started'] - ran[0]['fire_time'] <= grace
    run = client.get_run(ran[0]['run_id'])
    assert run.data.tags['mlnb.trigger'] == 'schedule:tick' and run.info.status == 'FINISHED'
    no_overlap(rows)
    assert 'LOST' in log and 'MISSED' in log and 'COALESCED' in log


def test_pipeline_schedule_once(project):
    from mlflow import MlflowClient
    make_notebook(project/'step.ipynb', 'n: int = 1', 'import mlnb\nmlnb.log_metric("n", n)')
    (project/'mlnb.yaml').write_text(textwrap.dedent('''
        name: testproj
        pipelines:
          daily:
            schedule: "* * * * * *"
            steps:
              only: {notebook: step.ipynb, params: {n: 2}}
        '''))
    assert "no pipeline 'dayly'" in bad('schedule', 'add', 'p', '--pipeline', 'dayly', cwd=project)
    assert '-p sets notebook parameters' in bad('schedule', 'add', 'p', '--pipeline', 'daily', '-p', 'n', '3', cwd=project)
    r = ok('schedule', 'add', 'p', '--pipeline', 'daily', '--tz', 'UTC', cwd=project)  # the cron is the pipeline's schedule:
    assert "pipeline daily, cron '* * * * * *' in UTC" in r.stdout
    time.sleep(2.2)
    d = start_daemon(project, '--once')
    assert d.wait(300) == 0, (project/'daemon.log').read_text()
    rows = history(project, 'p')
    ran = [r for r in rows if r['status'] in DONE]
    assert len(ran) == 1 and ran[0]['status'] == 'FINISHED' and ran[0]['run_id'], rows
    assert {r['status'] for r in rows} <= {'FINISHED', 'COALESCED'}
    run = MlflowClient(f"sqlite:///{project/'.mlnb'/'mlflow.db'}").get_run(ran[0]['run_id'])
    assert run.data.tags['mlnb.trigger'] == 'schedule:p'
