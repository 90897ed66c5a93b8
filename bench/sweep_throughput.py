"""Runs per second for many parametrized notebooks, measured side by side in one process: N points of a trivial
notebook through plain papermill one after another (the anchor: papermill has no parallelism), then as an mlnb sweep
with the `kernel` engine (a fresh kernel per Run, warm pool) and with the `inprocess` engine, both on one 2-worker
LocalCluster. mlnb's figures include tracking each point as an MLflow run (params, metrics, executed notebook + HTML).
Cluster start-up and one warm-up sweep are excluded and reported separately. Prints one JSON line.

    python bench/sweep_throughput.py [--n 40] [--workers 2]
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault('MLFLOW_DISABLE_TELEMETRY', 'true')


def trivial_notebook(path: Path):
    import nbformat
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}})
    nb.cells = [nbformat.v4.new_code_cell('x = 1', metadata={'tags': ['parameters']}),
                nbformat.v4.new_code_cell('y = x * 2\nprint(y)')]  # the same trivial notebook for papermill and mlnb
    nbformat.write(nb, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=40)
    ap.add_argument('--workers', type=int, default=2)
    a = ap.parse_args()
    import papermill as pm
    from distributed import Client, LocalCluster

    from mlnb.sweep import sweep
    out = {'bench': 'sweep_throughput', 'points': a.n, 'workers': a.workers}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d/'mlnb.yaml').write_text('name: bench\n')
        nb = d/'trivial.ipynb'
        trivial_notebook(nb)
        pm.execute_notebook(str(nb), str(d/'warm.ipynb'), {'x': 0}, progress_bar=False)
        t = time.perf_counter()
        for i in range(a.n): pm.execute_notebook(str(nb), str(d/f'pm{i}.ipynb'), {'x': i}, progress_bar=False)
        seq = time.perf_counter() - t
        out['papermill_sequential_runs_per_s'] = round(a.n / seq, 3)
        t = time.perf_counter()
        cluster = LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        out['cluster_start_s'] = round(time.perf_counter() - t, 2)
        try:
            for engine in ('kernel', 'inprocess'):
                sweep(nb, grid={'x': list(range(2 * a.workers))}, engine=engine, client=client, progress=False)  # warm-up
                t = time.perf_counter()
                res = sweep(nb, grid={'x': list(range(a.n))}, engine=engine, client=client, progress=False)
                took = time.perf_counter() - t
                assert res.ok and sorted(r.parameters['x'] for r in res.results) == list(range(a.n))
                out[f'mlnb_{engine}_runs_per_s'] = round(a.n / took, 3)
                out[f'mlnb_{engine}_vs_papermill'] = round(seq / took, 2)
        finally:
            client.close()
            cluster.close()
    out['targets'] = {'mlnb_kernel_vs_papermill': 2.5, 'mlnb_inprocess_vs_papermill': 10}
    print(json.dumps(out))


if __name__ == '__main__':
    main()
