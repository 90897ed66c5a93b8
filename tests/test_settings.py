"The repository's settings.ini is the documented site settings file: every key, each at mlnb's default."
import configparser
from pathlib import Path

from mlnb.config import Settings, load_config, read_site_settings

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
