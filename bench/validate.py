"""Data validation at scale: one suite of 8 common expectations on a subscriber table of 1M and 10M rows, evaluated by
plain Great Expectations on pandas (the anchor), by `mlnb.validate` on pandas (the vectorized fast path) and by
`mlnb.validate` on a Dask frame read partition-wise from Parquet by a LocalCluster of 2 single-threaded worker
processes. Same run, same data, same suite.

The data is generated deterministically with numpy (ids, categoricals, numbers with nulls and planted violations: bad
ids, duplicate ids, unknown plans, impossible tenures) and written once as Parquet parts of `--partition-rows` rows;
the table of each size is the first parts of the same sequence. GX and the pandas fast path read the whole table into
pandas first (their peak memory includes the frame, as a user's would; the read is timed apart as `load_s`); Dask
reads the parts inside the validation, so its `seconds` include reading (the ratio `(gx_load_s + gx_s) / dask_s`
compares both from the same Parquet).

Each contender runs in its own fresh process. `seconds` is the wall time of the validation call alone: imports,
GX's context set-up and the Dask cluster start (with the workers importing pandas, pyarrow, dask.dataframe and mlnb,
as GX's import is not timed either) are excluded and reported apart.

`peak_mib` is the peak resident memory of the contender's process tree over its whole life (imports, reading,
validating), sampled every 20 ms by this process with psutil as the sum of the RSS of the contender and all its
descendants (for Dask: the client with the scheduler and nannies in it, and the 2 worker processes;
`client_peak_mib` is the client's process alone). Sampling can miss a spike shorter than 20 ms, so `maxrss_mib` adds
`getrusage` high-water marks, exact per process: the contender's own, and for Dask the sum of the client's and each
worker's, an upper bound since their peaks need not coincide.

Results must agree: for every expectation, success and every field of GX's SUMMARY result (unexpected_count,
observed_value, element_count, missing_count, percentages, partial_unexpected_list and counts, ...) of both mlnb paths
equal GX's; floats to 1e-9 relative (a mean summed partition-wise may differ from pandas' in the last digits). One
exception: on Dask, `partial_unexpected_index_list` holds the Dask frame's own index, which `read_parquet` restarts
in every part, so it is not compared there. `identical` says so; if not, the differences go to stderr and the exit
status is 1. Prints one JSON line.

    python bench/validate.py [--sizes 1000000,10000000] [--skip-gx-above N] [--partition-rows 250000]
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault('GX_ANALYTICS_ENABLED', 'false')
os.environ.setdefault('MLFLOW_DISABLE_TELEMETRY', 'true')

PLANS = ['basic', 'standard', 'premium', 'family']
REGIONS = ['north', 'south', 'east', 'west', 'central', 'coast', 'metro', 'rural']
CONTRACTS = ['month-to-month', 'one-year', 'two-year']
CONTENDERS = ('gx', 'fast', 'dask')


def suite(rows: int) -> list:
    "The 8 expectations: all have mlnb fast paths; some pass, some fail on the planted violations."
    return [
        {'expect_table_row_count_to_equal': {'value': rows}},
        {'expect_column_values_to_be_unique': {'column': 'subscriber_id'}},
        {'expect_column_values_to_match_regex': {'column': 'subscriber_id', 'regex': r'^SUB-\d{8}$', 'mostly': 0.999}},
        {'expect_column_values_to_not_be_null': {'column': 'monthly_charges', 'mostly': 0.98}},
        {'expect_column_values_to_be_between': {'column': 'tenure_months', 'min_value': 0, 'max_value': 120}},
        {'expect_column_values_to_be_in_set': {'column': 'plan', 'value_set': PLANS}},
        {'expect_column_mean_to_be_between': {'column': 'monthly_charges', 'min_value': 20, 'max_value': 120}},
        {'expect_column_values_to_be_of_type': {'column': 'total_charges', 'type_': 'float64'}},
    ]


# ---------------------------------------------------------------------------------------------------------------- data
def part(i: int, n: int, start: int):
    "Part `i` of the table: `n` rows from global row `start`, from its own seed."
    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(20240 + i)
    g = np.arange(start, start + n, dtype=np.int64)
    ids = pd.Series((g * 48271 + 12345) % 100_000_000).astype(str).str.zfill(8)  # a bijection: ids are unique before planting
    ids = ('SUB-' + ids).to_numpy(dtype=object)
    pick = lambda k: rng.choice(n, size=min(k, n), replace=False)
    bad = pick(max(1, n // 10_000))                                     # ~0.01% malformed ids
    ids[bad] = [s.replace('SUB-', 'sub_') if j % 2 else s[:-1] for j, s in enumerate(ids[bad])]
    src, dst = pick(2), pick(2)                                         # 2 duplicated ids per part
    ids[dst] = ids[src]
    plan = np.array(PLANS, dtype=object)[rng.choice(4, n, p=[0.4, 0.3, 0.2, 0.1])]
    plan[pick(max(1, n // 20_000))] = 'legacy'                          # ~0.005% unknown plans
    tenure = rng.integers(0, 73, n)
    odd = pick(max(1, n // 50_000))
    tenure[odd] = rng.choice([-1, 999], len(odd))                      # ~0.002% impossible tenures
    monthly = np.round(rng.gamma(6.0, 11.0, n) + 18.0, 2)
    total = np.round(monthly * np.maximum(tenure, 0) * rng.uniform(0.9, 1.1, n), 2)
    monthly[rng.random(n) < 0.01] = np.nan                              # 1% missing charges
    total[np.isnan(monthly)] = np.nan
    return pd.DataFrame({
        'subscriber_id': pd.Series(ids, dtype='str'),
        'region': pd.Series(np.array(REGIONS, dtype=object)[rng.integers(0, len(REGIONS), n)], dtype='str'),
        'plan': pd.Series(plan, dtype='str'),
        'contract': pd.Series(np.array(CONTRACTS, dtype=object)[rng.choice(3, n, p=[0.55, 0.25, 0.2])], dtype='str'),
        'signup_date': pd.Timestamp('2015-01-01') + pd.to_timedelta(rng.integers(0, 3650, n), unit='D'),
        'tenure_months': tenure,
        'monthly_charges': monthly,
        'total_charges': total,
        'data_gb': rng.exponential(12.0, n).astype('float32'),
        'support_calls': rng.poisson(1.2, n).astype('int32'),
        'churned': rng.random(n) < 0.2,
    })


def make_table(root: Path, rows: int, per: int) -> Path:
    "A folder of Parquet parts holding the first `rows` rows; parts shared by several sizes are written once (hard links)."
    import pyarrow as pa
    import pyarrow.parquet as pq
    pool, out = root/'parts', root/f'rows-{rows}'
    pool.mkdir(parents=True, exist_ok=True)
    out.mkdir()
    for i, start in enumerate(range(0, rows, per)):
        n = min(per, rows - start)
        f = pool/f'part-{i:05d}-{n}.parquet'
        if not f.exists(): pq.write_table(pa.Table.from_pandas(part(i, n, start), preserve_index=False), f, row_group_size=per)
        dst = out/f'part-{i:05d}.parquet'
        try: os.link(f, dst)
        except OSError: shutil.copyfile(f, dst)
    return out


# ------------------------------------------------------------------------------------------------------ contenders
def plain(v):
    "JSON-friendly: numpy scalars as Python, NaN as None."
    if isinstance(v, dict): return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)): return [plain(x) for x in v]
    if hasattr(v, 'item') and not isinstance(v, (str, bytes)):
        try: v = v.item()
        except (ValueError, TypeError): return str(v)
    if isinstance(v, float) and not math.isfinite(v): return None
    return v if v is None or isinstance(v, (bool, int, float, str)) else str(v)


def maxrss_mib() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def gx_contender(path: str, entries: list) -> dict:
    "Plain GX 1.x on a pandas frame: an ephemeral context, a whole-dataframe batch, `batch.validate(suite)`."
    t = time.perf_counter()
    import logging

    import great_expectations as gx
    import great_expectations.expectations as gxe
    import pandas as pd
    from great_expectations.data_context.types.base import ProgressBarsConfig
    out = {'import_s': time.perf_counter() - t}
    logging.getLogger('great_expectations').setLevel(logging.ERROR)
    t = time.perf_counter()
    ctx = gx.get_context(mode='ephemeral')
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    bd = ctx.data_sources.add_pandas('bench').add_dataframe_asset('subscribers').add_batch_definition_whole_dataframe('all')
    camel = lambda t: ''.join(p.capitalize() for p in t.split('_'))
    gx_suite = gx.ExpectationSuite(name='bench', expectations=[getattr(gxe, camel(t))(**kw) for e in entries for t, kw in e.items()])
    out['setup_s'] = time.perf_counter() - t
    t = time.perf_counter()
    df = pd.read_parquet(path)
    out['load_s'] = time.perf_counter() - t
    t = time.perf_counter()
    res = bd.get_batch(batch_parameters={'dataframe': df}).validate(gx_suite, result_format='SUMMARY')
    out['seconds'] = time.perf_counter() - t
    got = {(r.expectation_config.type, r.expectation_config.kwargs.get('column')): r for r in res.results}  # GX may reorder
    rs = [got[t, kw.get('column')] for e in entries for t, kw in e.items()]
    out['results'] = [{'success': bool(r.success), **plain(dict(r.result or {}))} for r in rs]
    return out


def mlnb_results(res) -> list:
    bad = [f'{r.type}: {r.exception}' for r in res.results if r.exception]
    if bad: raise RuntimeError('; '.join(bad))
    return [{'success': bool(r.success), **plain(dict(r.result))} for r in res.results]


def fast_contender(path: str, entries: list) -> dict:
    "`mlnb.validate` on a pandas frame: every expectation of the suite on its vectorized path."
    t = time.perf_counter()
    import pandas as pd

    from mlnb.validation.core import validate
    from mlnb.validation.suite import load_suite
    out = {'import_s': time.perf_counter() - t}
    s = load_suite(entries)
    t = time.perf_counter()
    df = pd.read_parquet(path)
    out['load_s'] = time.perf_counter() - t
    t = time.perf_counter()
    res = validate(df, s, log=False)
    out['seconds'] = time.perf_counter() - t
    out['results'] = mlnb_results(res)
    return out


def dask_contender(path: str, entries: list, workers: int) -> dict:
    "`mlnb.validate` on a Dask frame over the Parquet parts, computed by a LocalCluster of single-threaded worker processes."
    t = time.perf_counter()
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    from mlnb.validation.core import validate
    from mlnb.validation.suite import load_suite
    out = {'import_s': time.perf_counter() - t}
    s = load_suite(entries)
    t = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    mods = ('pandas', 'pyarrow.dataset', 'dask.dataframe', 'mlnb.validation.core')
    client.run(lambda: [__import__(m) for m in mods])  # imports: not timed
    out['cluster_start_s'] = time.perf_counter() - t
    try:
        t = time.perf_counter()
        ddf = dd.read_parquet(path)
        res = validate(ddf, s, log=False)
        out['seconds'] = time.perf_counter() - t
        out['partitions'] = ddf.npartitions
        out['results'] = mlnb_results(res)
        out['worker_maxrss_mib'] = sum(client.run(maxrss_mib).values())
    finally:
        client.close()
        cluster.close()
    return out


def child(a):
    entries = json.loads(a.suite)
    fn = {'gx': gx_contender, 'fast': fast_contender, 'dask': lambda p, e: dask_contender(p, e, a.workers)}[a.child]
    out = fn(a.data, entries)
    out['maxrss_mib'] = maxrss_mib() + out.pop('worker_maxrss_mib', 0)
    print('RESULT ' + json.dumps(out))


# ------------------------------------------------------------------------------------------------------------- driver
def tree_rss(p) -> tuple:
    "RSS of `p` and of `p` with all its descendants, in bytes."
    import psutil
    own = total = 0
    for q in [p, *p.children(recursive=True)]:
        try: rss = q.memory_info().rss
        except psutil.Error: continue
        total += rss
        if q.pid == p.pid: own = rss
    return own, total


def kill_tree(p):
    import psutil
    procs = [*p.children(recursive=True), p]
    for q in procs:
        try: q.kill()
        except psutil.Error: pass
    psutil.wait_procs(procs, timeout=10)


def run_contender(kind: str, data: Path, entries: list, workers: int, cap_mib: float, timeout: float) -> dict:
    "One contender in a fresh process, its tree's RSS sampled every 20 ms; killed past `cap_mib` or `timeout` seconds."
    import psutil
    cmd = [sys.executable, __file__, '--child', kind, '--data', str(data), '--suite', json.dumps(entries), '--workers', str(workers)]
    with tempfile.TemporaryFile('w+') as so, tempfile.TemporaryFile('w+') as se:
        p = subprocess.Popen(cmd, stdout=so, stderr=se, text=True)
        proc, peak, peak_own, why, t0 = psutil.Process(p.pid), 0, 0, None, time.perf_counter()
        while p.poll() is None:
            own, rss = tree_rss(proc)
            peak, peak_own = max(peak, rss), max(peak_own, own)
            if rss > cap_mib * 2**20: why = f'killed: its processes passed the memory cap of {cap_mib:.0f} MiB'
            elif time.perf_counter() - t0 > timeout: why = f'killed: still running after {timeout:.0f} s'
            if why:
                kill_tree(proc)
                break
            time.sleep(0.02)
        p.wait()
        so.seek(0)
        se.seek(0)
        line = next((x for x in so.read().splitlines() if x.startswith('RESULT ')), None)
        err = se.read()
    if why or line is None:
        tail = ' | '.join(err.strip().splitlines()[-3:])
        rc = p.returncode
        status = f'killed by signal {-rc} (out of memory?)' if rc < 0 else f'exit status {rc}'
        return {'error': why or f'{status}: {tail}', 'peak_mib': round(peak / 2**20)}
    out = json.loads(line[len('RESULT '):])
    out['peak_mib'] = round(peak / 2**20)
    if kind == 'dask': out['client_peak_mib'] = round(peak_own / 2**20)  # the client's process alone (scheduler, nannies)
    out['process_s'] = time.perf_counter() - t0
    return out


def same(a, b) -> bool:
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if num(a) and num(b) and float in (type(a), type(b)): return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def differences(entries: list, ref: list, got: list, who: str) -> list:
    "Where `got` (mlnb's results) differs from `ref` (GX's), in words."
    skip = {'partial_unexpected_index_list'} if who == 'dask' else set()  # Dask's own per-part index
    out = []
    for e, r, g in zip(entries, ref, got, strict=True):
        (t, kw), = e.items()
        what = f"{who}: {t}({kw.get('column', '')})"
        out += [f'{what}: {k} {g.get(k)!r} vs GX {r.get(k)!r}' for k in sorted((set(r) | set(g)) - skip)
                if k not in r or k not in g or not same(r[k], g[k])]
    return out


def rounded(d: dict) -> dict:
    keep = ('seconds', 'peak_mib', 'client_peak_mib', 'maxrss_mib', 'load_s', 'import_s', 'setup_s', 'cluster_start_s', 'partitions',
            'error')
    return {k: (round(d[k], 3) if isinstance(d[k], float) else d[k]) for k in keep if k in d}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--sizes', default='1000000,10000000', help='comma-separated row counts')
    ap.add_argument('--skip-gx-above', type=int, default=None, help='do not run GX on more rows than this (when it cannot fit memory)')
    ap.add_argument('--partition-rows', type=int, default=250_000, help='rows per Parquet part (= per Dask partition)')
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--mem-cap-mib', type=float, default=None, help='kill a contender past this (default: 80%% of available memory)')
    ap.add_argument('--timeout', type=float, default=3600, help='kill a contender still running after this many seconds')
    ap.add_argument('--child', choices=CONTENDERS, help=argparse.SUPPRESS)
    ap.add_argument('--data', help=argparse.SUPPRESS)
    ap.add_argument('--suite', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child: return child(a)
    import psutil
    t_all = time.perf_counter()
    sizes = [int(s) for s in a.sizes.split(',')]
    cap = a.mem_cap_mib or psutil.virtual_memory().available / 2**20 * 0.8
    out = {'bench': 'validate', 'rows': sizes, 'expectations': len(suite(0)), 'partition_rows': a.partition_rows,
           'dask_workers': a.workers, 'mem_cap_mib': round(cap), 'sizes': {}}
    problems = []
    with tempfile.TemporaryDirectory(prefix='mlnb-bench-validate-') as d:
        for n in sizes:
            t = time.perf_counter()
            data = make_table(Path(d), n, a.partition_rows)
            entries = suite(n)
            res = {'generate_s': round(time.perf_counter() - t, 2)}
            for kind in CONTENDERS:
                if kind == 'gx' and a.skip_gx_above is not None and n > a.skip_gx_above:
                    res[kind] = {'error': f'skipped: --skip-gx-above {a.skip_gx_above}'}
                    continue
                res[kind] = run_contender(kind, data, entries, a.workers, cap, a.timeout)
                gx_too_big = kind == 'gx' and 'memory cap' in res[kind].get('error', '')  # a finding, not a failure
                if 'results' not in res[kind] and not gx_too_big: problems.append(f"{n} rows, {kind}: {res[kind]['error']}")
            gx, fast, dk = res['gx'], res['fast'], res['dask']
            diffs = []
            if 'results' in gx:
                for kind in ('fast', 'dask'):
                    if 'results' in res[kind]: diffs += differences(entries, gx['results'], res[kind]['results'], kind)
                res['gx_failed_expectations'] = sum(not r['success'] for r in gx['results'])
            res['identical'] = None if 'results' not in gx or not all('results' in res[k] for k in ('fast', 'dask')) else not diffs
            problems += [f'{n} rows, {x}' for x in diffs]
            ok = lambda *c: all('seconds' in c_ for c_ in c)
            res['ratios'] = {
                'gx_s / fast_s': round(gx['seconds'] / fast['seconds'], 2) if ok(gx, fast) else None,
                'gx_s / dask_s': round(gx['seconds'] / dk['seconds'], 2) if ok(gx, dk) else None,
                '(gx_load_s + gx_s) / dask_s': round((gx['load_s'] + gx['seconds']) / dk['seconds'], 2) if ok(gx, dk) else None,
                'fast_peak / gx_peak': round(fast['peak_mib'] / gx['peak_mib'], 3) if ok(gx, fast) else None,
                'dask_peak / gx_peak': round(dk['peak_mib'] / gx['peak_mib'], 3) if ok(gx, dk) else None,
            }
            for kind in CONTENDERS: res[kind] = rounded(res[kind])
            out['sizes'][str(n)] = res
    out['targets'] = {'gx_s / fast_s at 1000000 rows': '>= 3, identical results', 'dask_peak / gx_peak at 10000000 rows': '<= 0.5'}
    met = {}
    if '1000000' in out['sizes']:
        r = out['sizes']['1000000']
        v = r['ratios']['gx_s / fast_s']
        met['gx_s / fast_s at 1000000 rows'] = None if v is None else bool(v >= 3 and r['identical'])
    if '10000000' in out['sizes']:
        v = out['sizes']['10000000']['ratios']['dask_peak / gx_peak']
        met['dask_peak / gx_peak at 10000000 rows'] = None if v is None else bool(v <= 0.5)
    out['targets_met'] = met
    flags = [r['identical'] for r in out['sizes'].values() if r['identical'] is not None]
    out['identical'] = all(flags) if flags else None
    out['wall_s'] = round(time.perf_counter() - t_all, 1)
    print(json.dumps(out))
    if problems:
        print('bench/validate.py: ' + '\n  '.join(['problems:', *problems]), file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    main()
