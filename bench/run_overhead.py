"""What does tracking add to a Run? A trivial notebook, N times through plain `papermill.execute_notebook` and N times
through `mlnb.run` (MLflow run, parameters, tags, executed notebook + HTML as artifacts), interleaved in one process so
both see the same machine. mlnb forks its kernels from a preloaded server (`mlnb.forkserver`), which alone makes a Run
faster than papermill's; to isolate what tracking costs, `mlnb.run` is also timed with kernels started like papermill's
(`MLNB_KERNEL_FORK=0`), and the overhead is measured against that. Also times `mlnb --help`. Prints one JSON line.

    python bench/run_overhead.py [--n 20]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault('MLFLOW_DISABLE_TELEMETRY', 'true')


def trivial_notebook(path: Path):
    import nbformat
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}})
    nb.cells = [nbformat.v4.new_code_cell('x = 1', metadata={'tags': ['parameters']}), nbformat.v4.new_code_cell('y = x + 1\nprint(y)')]
    nbformat.write(nb, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=20)
    n = ap.parse_args().n
    import papermill as pm

    import mlnb
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d/'mlnb.yaml').write_text('name: bench\n')
        nb = d/'trivial.ipynb'
        trivial_notebook(nb)
        pm.execute_notebook(str(nb), str(d/'warm.ipynb'), {'x': 0}, progress_bar=False)  # warm both paths: imports, store
        assert mlnb.run(nb, {'x': 0}).ok
        plain, tracked, popen = [], [], []
        for i in range(n):
            t = time.perf_counter()
            pm.execute_notebook(str(nb), str(d/f'pm{i}.ipynb'), {'x': i}, progress_bar=False)
            plain.append(time.perf_counter() - t)
            t = time.perf_counter()
            r = mlnb.run(nb, {'x': i})
            tracked.append(time.perf_counter() - t)
            assert r.ok, r.summary()
            os.environ['MLNB_KERNEL_FORK'] = '0'  # the kernel started as papermill starts it
            try:
                t = time.perf_counter()
                r = mlnb.run(nb, {'x': i})
                popen.append(time.perf_counter() - t)
            finally: del os.environ['MLNB_KERNEL_FORK']
            assert r.ok, r.summary()
    helps = []
    exe = str(Path(sys.executable).parent/'mlnb')
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([exe, '--help'], capture_output=True, check=True)
        helps.append(time.perf_counter() - t)
    pm_med, mlnb_med, popen_med = statistics.median(plain), statistics.median(tracked), statistics.median(popen)
    print(json.dumps({
        'bench': 'run_overhead', 'runs': n,
        'papermill_median_s': round(pm_med, 3), 'mlnb_run_median_s': round(mlnb_med, 3),
        'mlnb_run_popen_kernel_median_s': round(popen_med, 3), 'mlnb_run_vs_papermill': round(pm_med / mlnb_med, 2),
        'tracking_overhead_pct': round(100 * (popen_med / pm_med - 1), 1), 'target_overhead_pct': 15,
        'mlnb_help_median_s': round(statistics.median(helps), 3), 'target_help_s': 0.3,
    }))


if __name__ == '__main__':
    main()
