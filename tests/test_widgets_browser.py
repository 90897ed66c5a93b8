"""Widgets in a real browser: the ValidationReport rendered live in JupyterLab and in a Voila dashboard (headless Chromium
driven by Playwright), clicked through its filter and detail pane. Under CI=true a missing browser or server fails."""
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import IN_CI, free_port, make_notebook, need, wait_http

CHROMIUM = shutil.which('chromium') or ('/usr/bin/chromium' if Path('/usr/bin/chromium').exists() else None)
BIN = Path(sys.executable).parent
ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage']
ROOT = ['--ServerApp.allow_root=True'] if os.geteuid() == 0 else []   # CI machines run as root

REPORT = '''import pandas as pd
from mlnb.validation.core import validate
from mlnb.widgets import ValidationReport
df = pd.DataFrame({'plan': ['basic', 'plus', 'platinum', 'basic', 'gold'], 'monthly_charges': [20.0, 35.5, 50.0, -1.0, 9.9],
                   'id': [1, 2, 3, 4, 4]})
res = validate(df, [{'expect_column_values_to_be_in_set': {'column': 'plan', 'value_set': ['basic', 'plus', 'pro']}},
                    {'expect_column_values_to_be_between': {'column': 'monthly_charges', 'min_value': 0}},
                    {'expect_column_values_to_not_be_null': {'column': 'plan'}},
                    {'expect_column_values_to_be_unique': {'column': 'id'}},
                    {'expect_table_row_count_to_be_between': {'min_value': 1, 'max_value': 10}}], log=False)
ValidationReport(res)'''


@pytest.fixture(scope='module')
def browser():
    need('Chromium', CHROMIUM is not None, 'install Debian chromium (apt-get install chromium)')
    try: from playwright.sync_api import sync_playwright
    except ImportError: need('playwright', False, 'pip install playwright'); return
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def report_dir(tmp_path):
    d = tmp_path/'dash'
    make_notebook(d/'report.ipynb', None, REPORT)
    return d


def serve(cmd: list, cwd: Path, log: Path, ready_url: str | None, port: int | None = None):
    env = {**os.environ, 'PATH': f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", 'MLFLOW_DISABLE_TELEMETRY': 'true'}
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=log.open('w'), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try: wait_http(ready_url, proc, port)
    except Exception:
        proc.kill()
        raise AssertionError(f'{cmd[0]} did not start:\n' + log.read_text()[-3000:]) from None
    return proc


def stop(proc):
    proc.terminate()
    try: proc.wait(20)
    except subprocess.TimeoutExpired: proc.kill(); proc.wait()


class ReportPage:
    "Page object for a rendered ValidationReport: what a user sees and clicks."
    def __init__(self, page, timeout_ms: int = 180_000):
        self.page = page
        page.locator('.mlnb-vr-header').first.wait_for(state='visible', timeout=timeout_ms)

    @property
    def header(self) -> str: return self.page.locator('.mlnb-vr-header').first.inner_text()

    def rows(self, status: str | None = None) -> int:
        sel = '.mlnb-vr-table tr[data-status]' + (f'[data-status="{status}"]' if status else '')
        return self.page.locator(sel).count()

    def show(self, which: str, expect_rows: int):
        self.page.locator('.mlnb-vr-filter button', has_text=which).first.click()
        self.page.wait_for_function(f"document.querySelectorAll('.mlnb-vr-table tr[data-status]').length == {expect_rows}",
                                    timeout=30_000)

    def pick(self, text: str):
        sel = self.page.locator('.mlnb-vr-pick select')
        label = next(o for o in sel.locator('option').all_inner_texts() if text in o)
        sel.select_option(label=label)

    def detail_has(self, text: str):
        self.page.wait_for_function(
            f"(document.querySelector('.mlnb-vr-detail') || {{innerText: ''}}).innerText.includes({text!r})", timeout=30_000)
        return True


def check_report(rp: ReportPage, shots: Path, name: str):
    "The same walk in every front end: failures first, filter to all and to passed, detail of one expectation."
    assert 'FAILED' in rp.header and '3 failed' in rp.header and '5 rows' in rp.header, rp.header
    assert rp.rows() == 3 and rp.rows('failed') == 3          # opens on the failures
    rp.page.screenshot(path=str(shots/f'{name}-failed.png'), full_page=True)
    assert rp.detail_has('platinum')                         # the first failure's unexpected values: plan not in set
    rp.show('all', 5)
    assert rp.rows('passed') == 2
    rp.pick('monthly_charges')
    assert rp.detail_has('-1')
    rp.show('passed', 2)
    assert rp.rows('failed') == 0
    rp.page.screenshot(path=str(shots/f'{name}-passed.png'), full_page=True)


def test_validation_report_in_jupyterlab(browser, report_dir, tmp_path):
    port, token = free_port(), secrets.token_hex(16)
    url = f'http://127.0.0.1:{port}'
    lab = serve([str(BIN/'jupyter'), 'lab', '--no-browser', f'--ServerApp.port={port}', '--ServerApp.ip=127.0.0.1',
                 f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={report_dir}', '--ServerApp.port_retries=0',
                 f'--LabApp.workspaces_dir={tmp_path/"ws"}', '--LabApp.news_url=', '--LabApp.extension_manager=readonly', *ROOT],
                report_dir, tmp_path/'lab.log', f'{url}/api/status?token={token}')
    try:
        page = browser.new_page(viewport={'width': 1400, 'height': 1000})
        page.goto(f'{url}/lab/tree/report.ipynb?token={token}', timeout=120_000)
        page.locator('.jp-Notebook .jp-Cell').first.wait_for(timeout=120_000)
        # Run > Run All Cells, as a user would (JupyterLab waits for the kernel to be ready before it executes)
        page.locator('.jp-StatusBar-TextItem', has_text='Idle').first.wait_for(timeout=120_000)
        page.locator('.lm-MenuBar-itemLabel', has_text='Run').first.click()
        page.get_by_role('menuitem', name='Run All Cells', exact=True).click()
        check_report(ReportPage(page), tmp_path, 'lab')
        page.close()
    finally: stop(lab)


def test_validation_report_in_voila(browser, report_dir, tmp_path):
    port = free_port()
    url = f'http://127.0.0.1:{port}'
    voila = serve([str(BIN/'voila'), 'report.ipynb', '--no-browser', f'--port={port}', '--Voila.ip=127.0.0.1', *ROOT],
                  report_dir, tmp_path/'voila.log', None, port)
    try:
        page = browser.new_page(viewport={'width': 1400, 'height': 1000})
        page.goto(url, timeout=180_000)
        rp = ReportPage(page)
        assert 'import pandas' not in page.inner_text('body')   # stakeholders see the report, not the code
        check_report(rp, tmp_path, 'voila')
        page.close()
    finally: stop(voila)


def test_ci_installs_the_browser():
    "CI must have the browser: a skipped browser test there would hide a broken UI."
    if IN_CI: assert CHROMIUM, 'CI must install Debian chromium'
    else: pytest.skip('only meaningful under CI=true')
