"""The public surface: what `import gpar` exports, and that importing it is cheap."""

import subprocess
import sys

import gpar


def test_public_names_are_pinned():
    assert sorted(gpar.__all__) == [
        "AllTasksFailed", "AttemptRecord", "ClusterConnectionError", "DeadlineExceeded",
        "EnvironmentCaptureError", "EnvironmentMismatch",
        "FailureBudgetExceeded", "GparError", "IncompleteResultsWarning", "JobReport",
        "LayerTooLarge", "OutputBusyError", "OutputExistsError", "Results",
        "SchemaConflictError", "SharedRandomStateWarning", "TaskError", "TaskFailedWarning",
        "TaskFailure", "apply", "shutdown",
    ]


def test_every_error_is_a_gpar_error():
    for name in ("AllTasksFailed", "ClusterConnectionError", "DeadlineExceeded",
                 "EnvironmentCaptureError", "EnvironmentMismatch", "FailureBudgetExceeded",
                 "LayerTooLarge", "OutputBusyError", "OutputExistsError", "SchemaConflictError",
                 "TaskError"):
        assert issubclass(getattr(gpar, name), gpar.GparError)


def test_import_gpar_loads_no_ray_pandas_pyarrow_or_duckdb():
    heavy = ["ray", "pandas", "pyarrow", "duckdb"]
    code = f"import sys, gpar; print([name in sys.modules for name in {heavy}])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == str([False] * len(heavy))


def test_reduce_sql_names_are_pinned_and_it_needs_neither_gpar_nor_ray():
    import reduce_sql

    assert sorted(reduce_sql.__all__) == [
        "Dataset", "NoDatasetError", "OutputBusyError", "OutputExistsError", "OutputTypeError",
        "PartialOutputWarning", "ReduceSqlError", "SchemaConflictError", "StaleDatasetError",
        "query",
    ]
    code = "import sys, reduce_sql; print('ray' in sys.modules, 'gpar' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]
