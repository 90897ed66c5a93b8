"Widgets on real results: a ValidationReport rebuilt from the JSON report a real Run logged to MLflow."
import pytest

from conftest import make_notebook


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
