"Widgets on real results: a ValidationReport rebuilt from a real Run's logged report; a DeployButton that really deploys."
import pytest
from conftest import make_notebook
from test_registry import copy_store, log_models, model_store  # noqa: F401 -- the session's store of logged iris models


def test_validation_report_from_a_runs_logged_report(project):
    import mlnb
    from mlnb.widgets import ValidationReport
    (project/'expectations').mkdir()
    (project/'expectations'/'churn.yaml').write_text('- expect_column_values_to_not_be_null: {column: x}\n'
                                                     '- expect_column_values_to_be_between: {column: x, min_value: 0, max_value: 10}\n'
                                                     '- expect_table_row_count_to_be_between: {min_value: 1}\n')
    nb = make_notebook(project/'v.ipynb', 'hi: int = 10', 'import pandas as pd, mlnb\ndf = pd.DataFrame({"x": [1, 2, None, 40, hi]})',
                       'res = mlnb.validate(df, "churn")')
    res = mlnb.run(nb, {'hi': 3})
    assert res.ok, res
    rep = ValidationReport.from_run(res.run_id, project=project)
    assert rep.filter.value == 'failed' and rep.shown == [0, 1]
    assert 'FAILED' in rep.header.value and '5 rows' in rep.header.value
    assert '40' in rep.detail.value or 'None' in rep.detail.value
    rep.filter.value = 'all'
    assert rep.table.value.count('data-status=') == 3
    with pytest.raises(FileNotFoundError, match='no validation report for suite'):
        ValidationReport.from_run(res.run_id, suite='other', project=project)
    with pytest.raises(FileNotFoundError, match='no validation report'):
        ValidationReport.from_run(mlnb.run(make_notebook(project/'n.ipynb', None, 'x = 1')).run_id, project=project)
    with pytest.raises(ValueError, match="show must be"):
        ValidationReport(rep.report, show='some')


def test_deploy_button_registers_promotes_and_serves(project, model_store):  # noqa: F811
    "One click (and its confirmation) on a real store: a new version, champion moved, a real server answering at the URL shown."
    import httpx

    from mlnb.deploy import local
    from mlnb.widgets import DeployButton
    copy_store(model_store, project)
    b = DeployButton(model_store.strong, name='iris', project=project)
    b.button.click()
    assert b.ask.layout.display == 'flex' and b.thread is None      # nothing happens before the confirmation
    b.confirm.click()
    b.thread.join(180)
    try:
        assert b.error is None, b.steps.value
        assert b.version == 1 and b.deployment.version == 1 and not b.button.disabled
        assert 'registered iris version 1' in b.steps.value and 'champion -&gt; version 1' in b.steps.value
        assert b.deployment.url in b.endpoint.value
        row = dict(sepal_length=5.1, sepal_width=3.5, petal_length=1.4, petal_width=0.2)
        r = httpx.post(f'{b.deployment.url}/invocations', json={'dataframe_records': [row]}, timeout=30)
        assert r.status_code == 200 and r.headers['x-model-version'] == '1' and len(r.json()['predictions']) == 1
        # a second click on another run: version 2 becomes champion and the running server follows it
        b2 = DeployButton(model_store.weak, name='iris', project=project)
        b2.start().join(180)
        assert b2.error is None and b2.version == 2, b2.steps.value
        assert b2.deployment.pid == b.deployment.pid                     # the same server, now serving version 2
        assert httpx.get(f'{b.deployment.url}/version', timeout=10).json()['version'] in (2, '2')
    finally: local.stop('iris', project=project)
    bad = DeployButton('no-such-run', name='iris', project=project)
    bad.start().join(60)
    assert bad.error is not None and 'mlnb-deploy-error' in bad.steps.value and not bad.button.disabled
