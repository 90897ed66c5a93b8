"Parameter discovery and validation; bad input is refused before any kernel starts."
import time
from pathlib import Path

import pytest
from conftest import make_notebook

import mlnb
from mlnb.errors import MlnbError, NotFound, UsageError
from mlnb.params import ParameterError, notebook_params

PARAMS = '''\
rows: int = 100_000  # number of rows
lr = 0.01  # learning rate
layers: list[int] = [64, 32]
opts: dict[str, float] = {"a": 1.0}  # optional weights
tags = ["x", "y"]
penalty: Literal["l1", "l2"] = "l2"
name = "run"
verbose = False
day: str = None  # required: the day to process
note: Optional[str] = None
seed = None'''


@pytest.fixture
def nb(project):
    return make_notebook(project/'p.ipynb', PARAMS, 'print(rows)')


def test_discovery(nb):
    spec = notebook_params(nb)
    got = {p.name: (str(p.type), p.default_src, p.required, p.help) for p in spec}
    assert got == {
        'rows': ('int', '100000', False, 'number of rows'),
        'lr': ('float', '0.01', False, 'learning rate'),
        'layers': ('list[int]', '[64, 32]', False, ''),
        'opts': ('dict[str, float]', "{'a': 1.0}", False, 'optional weights'),
        'tags': ('list[str]', "['x', 'y']", False, ''),
        'penalty': ("Literal['l1', 'l2']", "'l2'", False, ''),
        'name': ('str', "'run'", False, ''),
        'verbose': ('bool', 'False', False, ''),
        'day': ('str', 'None', True, 'required: the day to process'),
        'note': ('str | None', 'None', False, ''),
        'seed': ('any', 'None', False, ''),
    }
    assert spec.cell_index == 0 and spec.kernel == 'python3'


def test_cli_strings_are_coerced(nb):
    spec = notebook_params(nb)
    from mlnb.params import validate
    got = validate(spec, {'rows': '5', 'lr': '1e-3', 'layers': '8,4', 'opts': '{"b": 2}', 'tags': '[a, b]', 'penalty': 'l1',
                          'verbose': 'yes', 'day': '2026-11-22', 'note': 'none', 'seed': '3'}, raw=True)
    assert got == {'rows': 5, 'lr': 0.001, 'layers': [8, 4], 'opts': {'b': 2.0}, 'tags': ['a', 'b'], 'penalty': 'l1',
                   'verbose': True, 'day': '2026-11-22', 'note': 'none', 'seed': 3}  # a str stays a str


def test_yaml_values_are_checked(nb):
    from mlnb.params import validate
    spec = notebook_params(nb)
    assert validate(spec, {'rows': 3, 'lr': 1, 'day': 'd'}) == {'rows': 3, 'lr': 1.0, 'day': 'd'}
    with pytest.raises(ParameterError) as e:
        validate(spec, {'rows': '3', 'lr': True, 'layers': [1, 'two'], 'penalty': 'l3', 'day': 5})
    msg = str(e.value)
    assert "5 parameter problems" in msg
    assert "parameter 'rows' expects int, got '3'" in msg
    assert "parameter 'lr' expects float, got True" in msg
    assert "item 1 ('two') is not an integer" in msg
    assert "parameter 'penalty' expects Literal['l1', 'l2'], got 'l3'" in msg
    assert "parameter 'day' expects str, got 5" in msg


@pytest.mark.parametrize('given, expected', [
    ({'rowz': '1', 'day': 'd'}, "unknown parameter 'rowz'; did you mean 'rows'?"),
    ({'rows': 'many', 'day': 'd'}, "parameter 'rows' expects int, got 'many': not an integer"),
    ({'layers': '1,x', 'day': 'd'}, "parameter 'layers' expects list[int], got '1,x'"),
    ({'opts': '[1]', 'day': 'd'}, "parameter 'opts' expects dict[str, float], got '[1]'"),
    ({}, "parameter 'day' (str) is required and has no default [required: the day to process]: pass it, e.g. -p day VALUE"),
])
def test_bad_input_starts_nothing(nb, project, given, expected):
    t = time.time()
    with pytest.raises(ParameterError) as e:
        mlnb.run(nb, given, raw=True)
    assert expected in str(e.value)
    assert isinstance(e.value, MlnbError) and (e.value.exit_code, e.value.http_status) == (2, 400)
    assert time.time() - t < 5, 'validation must not wait for a kernel'
    # nothing was started or written: no run folder, no MLflow store
    assert not (project/'.mlnb').exists()


def test_no_parameters_cell(project):
    nb = make_notebook(project/'plain.ipynb', None, 'x = 1')
    assert len(notebook_params(nb)) == 0
    with pytest.raises(ParameterError, match="no cell tagged 'parameters'"):
        mlnb.run(nb, {'x': 2})
    assert not (project/'.mlnb').exists()


def test_broken_inputs(project):
    with pytest.raises(NotFound, match='does not exist') as e:
        mlnb.run(project/'missing.ipynb')
    assert (e.value.exit_code, e.value.http_status) == (2, 404)
    bad = project/'bad.ipynb'
    bad.write_text('{not json')
    with pytest.raises(UsageError, match='is not a notebook') as e:
        mlnb.run(bad)
    assert isinstance(e.value, ValueError) and e.value.exit_code == 2
    syn = make_notebook(project/'syn.ipynb', 'x = = 1')
    with pytest.raises(ParameterError, match='syntax error at line 1'):
        notebook_params(syn)
    assert not (project/'.mlnb').exists()
    assert Path(bad).read_text() == '{not json'  # input never touched
