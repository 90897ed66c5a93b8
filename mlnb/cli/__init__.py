"""The `mlnb` command line: `core` (the top group, shared options, error reporting) and one module per command group."""
from .core import app, main

__all__ = ['app', 'main']
