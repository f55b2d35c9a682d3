"""The public surface: what `import gpar` exports, and that importing it is cheap."""

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import envpack
import gpar


def test_public_names_are_pinned():
    assert sorted(gpar.__all__) == [
        "AllTasksFailed", "AttemptRecord", "ClusterConnectionError", "DeadlineExceeded",
        "EnvironmentCaptureError", "EnvironmentMismatch",
        "FailureBudgetExceeded", "GparError", "IncompleteResultsWarning", "Job", "JobProgress",
        "JobReport", "JobStream",
        "LayerTooLarge", "OutputBusyError", "OutputExistsError", "Results",
        "SchemaConflictError", "SharedRandomStateWarning", "TaskError", "TaskFailedWarning",
        "TaskFailure", "apply", "imap", "shutdown", "submit",
    ]


def test_every_error_is_a_gpar_error():
    for name in ("AllTasksFailed", "ClusterConnectionError", "DeadlineExceeded",
                 "EnvironmentCaptureError", "EnvironmentMismatch", "FailureBudgetExceeded",
                 "LayerTooLarge", "OutputBusyError", "OutputExistsError", "SchemaConflictError",
                 "TaskError"):
        assert issubclass(getattr(gpar, name), gpar.GparError)


def test_import_gpar_loads_no_ray_pandas_pyarrow_or_duckdb():
    """Nor what envpack reads installed distributions with: apply loads those when it runs."""
    heavy = ["ray", "pandas", "pyarrow", "duckdb", "packaging", "importlib.metadata"]
    code = f"import sys, gpar; print([name in sys.modules for name in {heavy}])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == str([False] * len(heavy))


def test_envpacks_functions_keep_their_names_once_its_submodules_are_imported():
    """A submodule named like one of envpack's functions would replace it on the package
    once imported (a worker imports the submodule that verifies, then calls verify)."""
    package = Path(envpack.__file__).parent
    assert not {path.stem for path in package.glob("*.py")} & set(envpack.__all__)
    code = ("import envpack.checks, envpack.records, envpack.discover, envpack; "
            "from envpack import verify, manifest; "
            "print(callable(envpack.verify), callable(envpack.manifest), callable(verify), "
            "callable(manifest))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["True"] * 4


def test_gpar_modules_import_one_another_without_a_cycle():
    """Only imports run at import time count: those at a module's top level, outside
    ``if TYPE_CHECKING:``; one inside a function runs when it is called."""
    package = Path(gpar.__file__).parent
    graph = {}
    for path in package.glob("*.py"):
        name = "gpar" if path.stem == "__init__" else f"gpar.{path.stem}"
        graph[name] = {imported for node in ast.parse(path.read_text()).body
                       for imported in _gpar_modules_imported(node, package)} - {name}
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle


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


def _gpar_modules_imported(node: ast.stmt, package: Path) -> set[str]:
    """The gpar modules a top-level statement imports: ``from gpar import x`` names gpar.x when
    x is a module of gpar's, else gpar itself."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name.split(".")[0] == "gpar"}
    if not isinstance(node, ast.ImportFrom) or (node.module or "").split(".")[0] != "gpar":
        return set()
    if node.module != "gpar":
        return {node.module}
    return {f"gpar.{alias.name}" if (package / f"{alias.name}.py").exists() else "gpar"
            for alias in node.names}
