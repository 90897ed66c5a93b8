"mlnb.validation: the fast paths give GX's own results (pandas and Dask), suites, edge cases, gates in a Run, the CLI."
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_notebook

from mlnb.validation.core import evaluate, profile, validate
from mlnb.validation.fast import FAST
from mlnb.validation.suite import SuiteError, load_suite

N = 3000


def planted() -> pd.DataFrame:
    "Data with planted violations: nulls, out-of-range values, unknown categories, duplicates, bad codes."
    rng = np.random.default_rng(0)
    df = pd.DataFrame({'id': rng.integers(0, 2900, N), 'key': np.arange(N), 'age': rng.normal(40, 15, N),
                       'plan': rng.choice(['basic', 'plus', 'premium', 'gold'], N, p=[.4, .3, .28, .02]).astype(object),
                       'code': [f'C{i:05d}' if i % 37 else f'x{i}' for i in range(N)], 'n': rng.integers(0, 100, N),
                       'spend': rng.gamma(2, 30, N)})
    df.loc[rng.choice(N, 50, replace=False), 'age'] = np.nan
    df.loc[rng.choice(N, 30, replace=False), 'plan'] = None
    df.loc[rng.choice(N, 5, replace=False), 'spend'] = np.nan
    return df


CASES = [  # every fast expectation, passing and failing, with mostly, strict bounds and one-sided bounds
    {'expect_column_values_to_not_be_null': {'column': 'age'}},
    {'expect_column_values_to_not_be_null': {'column': 'age', 'mostly': 0.9}},
    {'expect_column_values_to_not_be_null': {'column': 'plan'}},
    {'expect_column_values_to_not_be_null': {'column': 'n'}},
    {'expect_column_values_to_be_between': {'column': 'age', 'min_value': 0, 'max_value': 80}},
    {'expect_column_values_to_be_between': {'column': 'age', 'min_value': 0, 'max_value': 80, 'mostly': 0.95, 'strict_min': True}},
    {'expect_column_values_to_be_between': {'column': 'n', 'max_value': 90, 'strict_max': True}},
    {'expect_column_values_to_be_between': {'column': 'n', 'min_value': 0}},
    {'expect_column_values_to_be_in_set': {'column': 'plan', 'value_set': ['basic', 'plus', 'premium']}},
    {'expect_column_values_to_be_in_set': {'column': 'plan', 'value_set': ['basic', 'plus', 'premium'], 'mostly': 0.9}},
    {'expect_column_values_to_be_in_set': {'column': 'n', 'value_set': list(range(50))}},
    {'expect_column_values_to_be_unique': {'column': 'id'}},
    {'expect_column_values_to_be_unique': {'column': 'key'}},
    {'expect_column_values_to_be_unique': {'column': 'code'}},
    {'expect_column_values_to_be_unique': {'column': 'plan', 'mostly': 0.01}},
    {'expect_column_values_to_match_regex': {'column': 'code', 'regex': r'^C\d{5}$'}},
    {'expect_column_values_to_match_regex': {'column': 'plan', 'regex': 'a'}},
    {'expect_column_values_to_be_of_type': {'column': 'age', 'type_': 'float64'}},
    {'expect_column_values_to_be_of_type': {'column': 'n', 'type_': 'int'}},
    {'expect_column_values_to_be_of_type': {'column': 'n', 'type_': 'float64'}},
    {'expect_column_values_to_be_of_type': {'column': 'plan', 'type_': 'object'}},
    {'expect_column_mean_to_be_between': {'column': 'age', 'min_value': 30, 'max_value': 50}},
    {'expect_column_mean_to_be_between': {'column': 'spend', 'max_value': 10}},
    {'expect_column_min_to_be_between': {'column': 'age', 'min_value': 0}},
    {'expect_column_min_to_be_between': {'column': 'n', 'min_value': 0, 'strict_min': True}},
    {'expect_column_max_to_be_between': {'column': 'n', 'max_value': 99, 'strict_max': True}},
    {'expect_column_max_to_be_between': {'column': 'spend', 'min_value': 1, 'max_value': 1000}},
    {'expect_column_sum_to_be_between': {'column': 'n', 'min_value': 0, 'max_value': 1000}},
    {'expect_column_sum_to_be_between': {'column': 'spend', 'min_value': 0}},
    {'expect_table_row_count_to_be_between': {'min_value': 1, 'max_value': 5000}},
    {'expect_table_row_count_to_be_between': {'max_value': N, 'strict_max': True}},
    {'expect_table_row_count_to_equal': {'value': N}},
]
assert {next(iter(c)) for c in CASES} == set(FAST), 'every fast expectation is compared with GX'
AGGREGATES = ('expect_column_mean_to_be_between', 'expect_column_sum_to_be_between')


def same(a, b, rel=0.0) -> bool:
    "Equal, field by field; nulls equal nulls; floats within `rel`."
    if isinstance(a, list) and isinstance(b, list): return len(a) == len(b) and all(same(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict): return a.keys() == b.keys() and all(same(a[k], b[k], rel) for k in a)
    try:
        if pd.isna(a) and pd.isna(b): return True
    except (TypeError, ValueError): pass
    if isinstance(a, (float, np.floating)) and isinstance(b, (float, np.floating)): return math.isclose(a, b, rel_tol=rel, abs_tol=0)
    return type(a) is type(b) and a == b if isinstance(a, (np.generic,)) or isinstance(b, np.generic) else a == b


@pytest.fixture(scope='module')
def data(): return planted()


@pytest.fixture(scope='module')
def gx_results(data):
    "GX itself, once, on the whole pandas frame."
    return evaluate(data, load_suite(CASES), fast=False)


@pytest.fixture(scope='module')
def fast_results(data):
    import dask
    import dask.dataframe as dd
    with dask.config.set(scheduler='threads'):
        return {'pandas': evaluate(data, CASES), 'dask': evaluate(dd.from_pandas(data, npartitions=13), CASES)}


@pytest.mark.parametrize('backend', ['pandas', 'dask'])
@pytest.mark.parametrize('i', range(len(CASES)), ids=[f"{next(iter(c))[7:]}-{i}" for i, c in enumerate(CASES)])
def test_fast_path_equals_gx(i, backend, fast_results, gx_results):
    f, g = fast_results[backend][i], gx_results[i]
    assert (f.engine, g.engine) == ('fast', 'gx')
    assert g.exception is None and f.exception is None, (f.exception, g.exception)
    assert f.success == g.success, (f.result, g.result)
    rel = 1e-9 if backend == 'dask' and f.type in AGGREGATES else 0.0  # partition sums add in another order
    assert f.result.keys() == g.result.keys(), (sorted(f.result), sorted(g.result))
    for k in g.result: assert same(f.result[k], g.result[k], rel), (k, f.result[k], g.result[k])


def test_planted_violations_are_found(gx_results):
    "The comparison above is not vacuous: the planted problems fail, with counts."
    by = {(r.type, json.dumps(r.kwargs, sort_keys=True)): r for r in gx_results}
    failed = [r for r in gx_results if not r.success]
    assert len(failed) >= 12
    dup = next(r for r in failed if r.type == 'expect_column_values_to_be_unique')
    assert dup.unexpected_count > 0 and len(dup.partial_unexpected_list) == 20
    assert by[('expect_column_values_to_not_be_null', '{"column": "age"}')].unexpected_count == 50


def test_dask_many_partitions_same_as_pandas(data):
    import dask
    import dask.dataframe as dd
    whole = evaluate(data, CASES)
    with dask.config.set(scheduler='threads'):
        for parts in (1, 7, 64):
            split = evaluate(dd.from_pandas(data, npartitions=parts), CASES)
            for w, s in zip(whole, split, strict=True):
                assert w.success == s.success and same(w.result, s.result, 1e-9 if w.type in AGGREGATES else 0), (parts, w.type, w.kwargs)


def test_edge_cases_fail_with_a_message(data):
    res = validate(data, [{'expect_column_values_to_be_between': {'column': 'nope', 'min_value': 0}},
                          {'expect_column_mean_to_be_between': {'column': 'nope', 'min_value': 0}},
                          {'expect_column_values_to_be_between': {'column': 'plan', 'min_value': 0}},   # strings vs a number
                          {'expect_column_mean_to_be_between': {'column': 'code', 'min_value': 0}},
                          {'expect_column_values_to_match_regex': {'column': 'n', 'regex': '^[0-9]$'}}], log=False)
    assert not res.success and res.statistics == {'evaluated': 5, 'successful': 0, 'failed': 5, 'success_percent': 0.0}
    missing, missing2, wrong, wrong2, _ = res.results
    assert "column 'nope' does not exist" in missing.exception and 'columns: id, key, age' in missing.exception
    assert "column 'nope' does not exist" in missing2.exception
    assert 'same type' in wrong.exception and "mean" in wrong2.exception
    assert 'nope' in res.summary() and 'FAILED' in res.summary()


def test_empty_frame_as_gx(data):
    "An empty frame: GX's map expectations pass vacuously, aggregates fail with observed None, the row count fails."
    empty = data.head(0)
    suite = [CASES[0], CASES[4], CASES[11], CASES[21], CASES[23], CASES[27], CASES[29]]
    fast, gx = evaluate(empty, suite), evaluate(empty, suite, fast=False)
    for f, g in zip(fast, gx, strict=True): assert f.success == g.success and same(f.result, g.result), (f.type, f.result, g.result)
    assert [r.success for r in fast] == [True, True, True, False, False, True, False]
    assert fast[3].observed_value is None


def test_fallback_to_gx_for_other_expectations(data):
    res = validate(data, [{'expect_column_median_to_be_between': {'column': 'age', 'min_value': 30, 'max_value': 50}},
                          {'type': 'expect_column_values_to_not_be_null', 'column': 'n',
                           'row_condition': 'n > 5', 'condition_parser': 'pandas'},
                          {'expect_column_values_to_not_be_null': {'column': 'n'}}], log=False)
    assert [r.engine for r in res.results] == ['gx', 'gx', 'fast'] and res.success
    assert 30 < res.results[0].observed_value < 50


def test_suite_yaml_and_errors(tmp_path):
    d = tmp_path/'expectations'
    d.mkdir()
    (d/'good.yaml').write_text('- expect_column_values_to_not_be_null: {column: id}\n'
                               '- type: expect_column_values_to_be_in_set\n  column: plan\n  value_set: [a, b]\n  notes: plans we sell\n'
                               '- expect_column_median_to_be_between: {column: age, min_value: 1}\n')
    s = load_suite('good', project=tmp_path)
    assert s.name == 'good' and [e.type for e in s.expectations][1] == 'expect_column_values_to_be_in_set'
    assert s.expectations[1].meta == {'notes': 'plans we sell'}
    gs = s.to_gx()
    assert type(gs).__name__ == 'ExpectationSuite' and len(gs.expectations) == 3
    assert [e.type for e in load_suite(gs).expectations] == [e.type for e in s.expectations]
    (d/'bad.yaml').write_text('- expect_column_values_to_be_betwen: {column: x, min_value: 0}\n'
                              '- expect_column_values_to_be_between: {column: x, mn_value: 0}\n'
                              '- expect_column_values_to_be_in_set: {column: x}\n'
                              '- expect_column_mean_to_be_between: {column: x, min_value: 5, max_value: 1}\n'
                              '- expect_column_values_to_not_be_null: {column: x, mostly: 2}\n'
                              '- expect_column_median_to_be_between: {colum: x}\n'
                              '- just a string\n')
    with pytest.raises(SuiteError) as e: load_suite('bad', project=tmp_path)
    msg, f = str(e.value), str(d/'bad.yaml')
    lines = msg.splitlines()
    assert all(line.startswith(f'{f}: entry ') for line in lines), msg
    assert ("entry 1 (expect_column_values_to_be_betwen): unknown expectation type "
            "(did you mean 'expect_column_values_to_be_between'?)") in msg
    assert "entry 2 (expect_column_values_to_be_between): unknown argument 'mn_value' (did you mean 'min_value'?)" in msg
    assert "entry 3 (expect_column_values_to_be_in_set): needs 'value_set'" in msg
    assert 'entry 4 (expect_column_mean_to_be_between): min_value 5 is greater than max_value 1' in msg
    assert 'entry 5 (expect_column_values_to_not_be_null): mostly must be a number from 0 to 1, got 2' in msg
    assert 'entry 6 (expect_column_median_to_be_between): ' in msg and 'column' in lines[5]
    assert 'entry 7: must be' in msg
    with pytest.raises(SuiteError, match="no suite 'god'.*did you mean 'good'"): load_suite('god', project=tmp_path)
    (d/'notalist.yaml').write_text('a: 1\n')
    with pytest.raises(SuiteError, match='must be a list'): load_suite('notalist', project=tmp_path)


def test_every_accepted_fast_entry_builds_in_gx():
    for e in load_suite(CASES).expectations: e.to_gx()


def test_reports(data):
    res = validate(data, CASES[:6], log=False)
    d = json.loads(res.to_json())
    assert d['statistics']['evaluated'] == 6 and d['success'] is False and d['results'][0]['result']['unexpected_count'] == 50
    assert all(x is None for x in d['results'][0]['result']['partial_unexpected_list'])  # NaN -> null in JSON
    h = res.to_html()
    assert h.startswith('<!doctype html>') and 'expect_column_values_to_not_be_null' in h and 'FAILED' in h
    assert '<table' in res._repr_html_()


def test_profile_proposes_a_suite_that_passes_on_its_data(data, tmp_path):
    entries = profile(data)
    types = {(next(iter(e)), next(iter(e.values())).get('column')) for e in entries}
    assert ('expect_column_values_to_be_unique', 'key') in types and ('expect_column_values_to_be_in_set', 'plan') in types
    assert ('expect_column_values_to_be_between', 'age') in types and ('expect_column_values_to_be_of_type', 'n') in types
    assert validate(data, entries, log=False).success


def test_gate_in_a_notebook_run(project):
    "A failing gate fails the Run; metrics and both reports are logged to it."
    from mlflow import MlflowClient

    import mlnb
    (project/'expectations').mkdir()
    (project/'expectations'/'churn.yaml').write_text('- expect_column_values_to_not_be_null: {column: x}\n'
                                                     '- expect_column_values_to_be_between: {column: x, min_value: 0, max_value: 10}\n'
                                                     '- expect_table_row_count_to_be_between: {min_value: 1}\n')
    nb = make_notebook(project/'gate.ipynb', 'hi: int = 10',
                       'import pandas as pd, mlnb\ndf = pd.DataFrame({"x": [1, 2, None, 40, hi]})',
                       'res = mlnb.validate(df, "churn", gate=True)  # the public form', 'print("after")')
    res = mlnb.run(nb, {'hi': 3})
    assert res.status == 'FAILED' and res.error.ename == 'ValidationFailed', res
    assert "expect_column_values_to_be_between(column='x', min_value=0, max_value=10): 1 unexpected" in res.error.evalue
    run = MlflowClient(res.tracking_uri).get_run(res.run_id)
    assert run.data.metrics == {'validation_success': 0.0, 'validation_evaluated': 3.0, 'validation_failed': 2.0}
    arts = {a.path for a in MlflowClient(res.tracking_uri).list_artifacts(res.run_id, 'validation')}
    assert arts == {'validation/churn.json', 'validation/churn.html'}
    local = MlflowClient(res.tracking_uri).download_artifacts(res.run_id, 'validation/churn.json', str(project))
    assert json.loads(Path(local).read_text())['statistics']['failed'] == 2


def _mlnb(*args, cwd):
    return subprocess.run([str(Path(sys.executable).parent/'mlnb'), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_cli_exit_codes(project, data):
    (project/'expectations').mkdir()
    (project/'expectations'/'ok.yaml').write_text('- expect_column_values_to_not_be_null: {column: n}\n')
    (project/'expectations'/'bad.yaml').write_text('- expect_column_values_to_be_unique: {column: id}\n')
    data.to_parquet(project/'d.parquet')
    data.to_csv(project/'d.csv', index=False)
    from typer.testing import CliRunner

    from mlnb.cli import app
    run = lambda *a: CliRunner().invoke(app, list(a))
    r = run('validate', 'd.parquet', '--suite', 'ok')
    assert r.exit_code == 0 and "suite 'ok' passed" in r.output, r.output
    r = run('validate', 'run', 'd.csv', '--suite', 'bad', '--json')
    assert r.exit_code == 1 and json.loads(r.output)['statistics']['failed'] == 1, r.output
    r = run('validate', 'd.parquet', '--suite', 'nosuch')
    assert r.exit_code == 2 and r.stderr.startswith("mlnb: error: no suite 'nosuch'"), r.output
    r = run('validate', 'missing.csv', '--suite', 'ok')
    assert (r.exit_code, r.stderr) == (2, 'mlnb: error: missing.csv does not exist\n'), r.output
    (project/'expectations'/'two.yaml').write_text('- expect_column_values_to_be_in_set: {column: n}\n- expect_it: {}\n')
    r = run('validate', 'd.csv', '--suite', 'two')  # a suite error lists one problem per line, and keeps its lines
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 2 and "entry 2 (expect_it): unknown expectation type" in r.stderr, r.output
    assert run('validate', 'profile', 'd.csv', '-o', 'expectations/prof.yaml').exit_code == 0
    r = run('validate', 'profile', 'd.csv', '-o', 'expectations/prof.yaml')
    assert (r.exit_code, r.stderr) == (2, 'mlnb: error: expectations/prof.yaml exists; use --force to overwrite it\n'), r.output
    assert run('validate', 'd.csv', '--suite', 'prof', '--lazy').exit_code == 0
    t = time.perf_counter()
    p = _mlnb('validate', '--help', cwd=project)  # the real command: fast, no GX import
    assert p.returncode == 0 and 'profile' in p.stdout and time.perf_counter() - t < 30
    p = subprocess.run([sys.executable, '-c', 'import sys, mlnb.cli, mlnb.cli.validate, mlnb.validation.core, '
                        'mlnb.validation.fast, mlnb.validation.suite; '
                        'print(sorted(m for m in ("great_expectations", "pandas", "dask") if m in sys.modules))'],
                       capture_output=True, text=True, timeout=120)
    assert p.stdout.strip() == '[]', p.stdout + p.stderr
