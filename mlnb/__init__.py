"""mlnb: Jupyter-native MLOps. Notebooks are the source of truth; production runs are notebook runs."""
__version__ = "0.1.0"

# The in-notebook API and `run` load lazily so `import mlnb` stays fast (no mlflow, papermill or dask).
_lazy = {
    'log_metric': 'mlnb.track', 'log_metrics': 'mlnb.track', 'log_param': 'mlnb.track', 'log_params': 'mlnb.track',
    'log_artifact': 'mlnb.track', 'active_run_id': 'mlnb.track',
    'run': 'mlnb.runs', 'RunResult': 'mlnb.execute', 'RunRequest': 'mlnb.execute',
    'load_config': 'mlnb.config', 'notebook_params': 'mlnb.params',
    'validate': 'mlnb.validation.core', 'ValidationFailed': 'mlnb.validation.core', 'run_pipeline': 'mlnb.pipeline.runner',
}
__all__ = ['__version__', *_lazy]

def __getattr__(name):
    if name in _lazy:
        import importlib
        return getattr(importlib.import_module(_lazy[name]), name)
    raise AttributeError(f"module 'mlnb' has no attribute {name!r}")

def __dir__(): return sorted(__all__)
