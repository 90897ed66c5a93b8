"""The incremental cache: the demo's churn pipeline (ingest -> validate -> train sweep of 4 points -> evaluate) run in
full, then run again unchanged, in the same process. The unchanged re-run must take <= 1 s and start no kernel:
it is timed end to end (spec validation, cache lookups, MLflow parent run) and every process started in the meantime
is counted. A third run after editing one code cell of 04_evaluate shows that only that step re-runs. Prints one JSON line.

    python bench/pipeline_cache.py [--rows 20000]
"""
import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault('MLFLOW_DISABLE_TELEMETRY', 'true')


class ChildWatch:
    "Counts the processes started under this one while it is active (kernels, fork servers, Dask workers)."
    def __init__(self):
        import psutil
        self.me, self.seen, self.stop = psutil.Process(), set(), threading.Event()

    def __enter__(self):
        self.before = {p.pid for p in self.me.children(recursive=True)}
        self.t = threading.Thread(target=self._poll, daemon=True)
        self.t.start()
        return self

    def _poll(self):
        while not self.stop.is_set():
            self.seen |= {p.pid for p in self.me.children(recursive=True)}
            time.sleep(0.005)

    def __exit__(self, *a):
        self.stop.set()
        self.t.join()
        self.new = len(self.seen - self.before)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--rows', type=int, default=20000)
    a = ap.parse_args()
    import nbformat
    from mlnb.demo import init_project
    from mlnb.pipeline.runner import run_pipeline
    with tempfile.TemporaryDirectory() as d:
        proj = init_project(Path(d)/'churn')
        params = {'ingest': {'rows': a.rows}}
        t = time.perf_counter()
        full = run_pipeline('churn', proj, params=params)
        full_s = time.perf_counter() - t
        assert full.ok, full.table()
        with ChildWatch() as w:
            t = time.perf_counter()
            again = run_pipeline('churn', proj, params=params)
            again_s = time.perf_counter() - t
        assert again.ok and len(again.cached) == len(again.steps), again.table()
        nb = nbformat.read(proj/'04_evaluate.ipynb', as_version=4)
        code = [c for c in nb.cells if c.cell_type == 'code']
        code[-1].source += '\nprint("edited")'
        nbformat.write(nb, proj/'04_evaluate.ipynb')
        t = time.perf_counter()
        edited = run_pipeline('churn', proj, params=params)
        edited_s = time.perf_counter() - t
        assert edited.ok and edited.executed == ['evaluate'], edited.table()
    print(json.dumps({'bench': 'pipeline_cache', 'steps': len(full.steps), 'rows': a.rows,
                      'full_run_s': round(full_s, 2), 'unchanged_rerun_s': round(again_s, 3),
                      'unchanged_rerun_processes_started': w.new, 'full_vs_rerun': round(full_s / again_s, 1),
                      'one_step_edited_s': round(edited_s, 2), 'one_step_edited_executed': edited.executed,
                      'targets': {'unchanged_rerun_s': 1.0, 'unchanged_rerun_processes_started': 0}}))


if __name__ == '__main__':
    main()
