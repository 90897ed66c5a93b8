"""What does a user wait for, from typing the command to getting the prompt back? The same trivial notebook through the
`papermill` CLI (the anchor: the tool `mlnb run` wraps), `mlnb run`, `mlnb sweep --grid x=1 --engine inprocess` (one
point) and `mlnb pipeline run` of a one-step pipeline. Each is a fresh process started from the venv's own executables,
as a user types them, with `PYTHONDONTWRITEBYTECODE=1` (as on these machines and in many container images), the
contenders interleaved, the median of N.

Two cases, each contender in its own project: an EXISTING project (its store created and migrated by an earlier,
untimed run: the headline, what a user pays day to day) and a NEW project (a fresh folder each time: the store's
creation is part of the cold start). papermill has no store, so its one time serves both. Also says whether the venv
holds compiled bytecode (`make install` compiles it). Prints one JSON line.

    python bench/cold_start.py [--n 5]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
NOTEBOOK = {'cells': [{'cell_type': 'code', 'execution_count': None, 'id': 'p', 'metadata': {'tags': ['parameters']},
                       'outputs': [], 'source': 'x = 1'},
                      {'cell_type': 'code', 'execution_count': None, 'id': 'b', 'metadata': {}, 'outputs': [],
                       'source': 'y = x + 1\nprint(y)'}],
            'metadata': {'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}},
            'nbformat': 4, 'nbformat_minor': 5}
PIPELINE = 'pipelines:\n  one:\n    steps:\n      only:\n        notebook: trivial.ipynb\n'
CONTENDERS = {  # name: (command after the venv's bin folder, the project's mlnb.yaml holds a pipeline)
    'papermill': (['papermill', 'trivial.ipynb', 'out.ipynb', '-p', 'x', '2'], False),
    'mlnb_run': (['mlnb', 'run', 'trivial.ipynb', '-p', 'x', '2'], False),
    'mlnb_sweep': (['mlnb', 'sweep', 'trivial.ipynb', '--grid', 'x=2', '--engine', 'inprocess'], False),
    'mlnb_pipeline': (['mlnb', 'pipeline', 'run', 'one', '--force'], True),
}
TARGET_RUN_VS_PAPERMILL, TARGET_SWEEP_S = 1.2, 8.0


def new_project(root: Path, name: str, pipeline: bool) -> Path:
    d = Path(tempfile.mkdtemp(prefix=f'{name}-', dir=root))
    (d/'mlnb.yaml').write_text(f'name: {name}\n' + (PIPELINE if pipeline else ''))
    (d/'trivial.ipynb').write_text(json.dumps(NOTEBOOK))
    return d


def timed(cmd: list, cwd: Path) -> float:
    "Seconds from start to exit of `cmd` run in `cwd` as a fresh process; a failure raises `RuntimeError` with its output."
    env = {**os.environ, 'PYTHONDONTWRITEBYTECODE': '1', 'MLFLOW_DISABLE_TELEMETRY': 'true',
           'PATH': f'{BIN}{os.pathsep}{os.environ.get("PATH", "")}'}
    t = time.perf_counter()
    p = subprocess.run([str(BIN/cmd[0]), *cmd[1:]], cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t
    if p.returncode: raise RuntimeError(f'{" ".join(cmd)} exited {p.returncode}: {(p.stderr or p.stdout).strip()[-300:]}')
    return took


def compiled(module: str) -> bool:
    "Whether the venv holds bytecode for `module` (as `make install` leaves it)."
    import importlib.util
    spec = importlib.util.find_spec(module)
    return spec is not None and spec.origin is not None and (Path(spec.origin).parent/'__pycache__').is_dir()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=5)
    n = ap.parse_args().n
    root = Path(tempfile.mkdtemp(prefix='mlnb-cold-'))
    try:
        existing = {k: new_project(root, k, pipe) for k, (_, pipe) in CONTENDERS.items()}
        old, new, errors = {k: [] for k in CONTENDERS}, {k: [] for k in CONTENDERS if k != 'papermill'}, {}
        def attempt(k, cmd, cwd, into):
            if k in errors: return
            try: t = timed(cmd, cwd)
            except RuntimeError as e: errors[k] = str(e); return
            if into is not None: into[k].append(t)
        for k, (cmd, _) in CONTENDERS.items(): attempt(k, cmd, existing[k], None)  # creates each store; not timed
        for _ in range(n):  # interleaved, so that every contender sees the same machine
            for k, (cmd, pipe) in CONTENDERS.items():
                attempt(k, cmd, existing[k], old)
                if k in new:
                    d = new_project(root, k, pipe)
                    attempt(k, cmd, d, new)
                    shutil.rmtree(d, ignore_errors=True)
    finally: shutil.rmtree(root, ignore_errors=True)
    if 'papermill' in errors: sys.exit(f'the anchor failed: {errors["papermill"]}')
    old, new = {k: v for k, v in old.items() if k not in errors}, {k: v for k, v in new.items() if k not in errors}
    med = {k: statistics.median(v) for k, v in old.items()}
    med_new = {k: statistics.median(v) for k, v in new.items()}
    pm = med['papermill']
    out = {'bench': 'cold_start', 'runs': n, 'case': 'existing project (headline); new_project_* include creating the store',
           'venv_bytecode': all(compiled(m) for m in ('mlflow', 'pandas', 'papermill'))}
    out.update({f'{k}_median_s': round(v, 3) for k, v in med.items()})
    out.update({f'{k}_vs_papermill': round(v / pm, 2) for k, v in med.items() if k != 'papermill'})
    out.update({f'new_project_{k}_median_s': round(v, 3) for k, v in med_new.items()})
    out.update({f'new_project_{k}_vs_papermill': round(v / pm, 2) for k, v in med_new.items()})
    out.update({'target_run_vs_papermill': TARGET_RUN_VS_PAPERMILL, 'target_sweep_s': TARGET_SWEEP_S,
                'targets_met': ('mlnb_run' in med and med['mlnb_run'] / pm <= TARGET_RUN_VS_PAPERMILL
                                and 'mlnb_sweep' in med and med['mlnb_sweep'] <= TARGET_SWEEP_S)})
    if errors: out['errors'] = errors
    print(json.dumps(out))


if __name__ == '__main__':
    main()
