"The repository's settings.ini is the documented site settings file: every key, each at mlnb's default."
import configparser
from pathlib import Path

import pytest

from mlnb.config import ConfigError, Settings, load_config, read_site_settings
from mlnb.errors import MlnbError

ROOT = Path(__file__).parents[1]


def test_site_settings_file_documents_every_setting():
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(ROOT/'settings.ini')
    assert set(cp['mlnb']) == set(Settings.model_fields)
    defaults = Settings()
    for k, v in read_site_settings(ROOT/'settings.ini').items(): assert getattr(defaults, k) == v, k


def test_layers(tmp_path):
    site = tmp_path/'site.ini'
    site.write_text('[mlnb]\ntracking_uri = postgresql://mlflow@db/mlflow\ntimeout = 100\nserve_port = 7000\n')
    proj = tmp_path/'p'
    proj.mkdir()
    (proj/'mlnb.yaml').write_text('name: p\ntimeout: 50\n')
    env = {'MLNB_SITE_SETTINGS': str(site), 'MLNB_SERVE_PORT': '8000'}
    cfg = load_config(proj, environ=env, experiment='x')
    s = cfg.settings
    assert (s.tracking_uri, s.timeout, s.serve_port, cfg.experiment) == ('postgresql://mlflow@db/mlflow', 50.0, 8000, 'x')
    assert cfg.tracking_uri == 'postgresql://mlflow@db/mlflow'
    assert cfg.sources == {'tracking_uri': str(site), 'timeout': str(proj/'mlnb.yaml'), 'serve_port': 'environment', 'experiment': 'flags'}


def test_a_bad_layer_names_itself(tmp_path):
    "Each layer is checked on its own: the error says which file (or the environment), which field and why; exit status 2."
    site = tmp_path/'site.ini'
    site.write_text('[mlnb]\nserve_port = http\n')
    with pytest.raises(ConfigError, match=f'{site}: serve_port: Input should be a valid integer') as e:
        load_config(tmp_path, environ={'MLNB_SITE_SETTINGS': str(site)})
    assert isinstance(e.value, MlnbError) and isinstance(e.value, ValueError) and e.value.exit_code == 2
    (tmp_path/'mlnb.yaml').write_text('name: p\ntimout: 5\n')
    with pytest.raises(ConfigError, match='mlnb.yaml: timout: unknown setting; known settings: tracking_uri'):
        load_config(tmp_path, environ={})
    (tmp_path/'mlnb.yaml').write_text('name: p\n')
    with pytest.raises(ConfigError, match='environment: MLNB_START_TIMEOUT: Value error, must be a positive number'):
        load_config(tmp_path, environ={'MLNB_START_TIMEOUT': '0'})
