"""envpack against a real cluster whose workers have nothing but Python and Ray.

The driver is a script run as __main__ from the project's virtualenv, with a local helper module
beside it; the cluster is ``ray start --head`` from a second virtualenv (tests/bare_cluster.py).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from bare_cluster import OLDER_DATEUTIL, bare_venv, running_cluster

pytestmark = pytest.mark.slow

HELPERS = """
def scale(value):
    return 2 * value
"""

#: Uses numpy, pandas (compiled, absent on the workers), tqdm (pure Python, absent),
#: python-dateutil (the workers have an older one) and the local helpers module.
FN = """
import importlib.metadata
import json
import os
import sys
from pathlib import Path

import dateutil
import numpy as np
import pandas as pd
import tqdm

import gpar
from helpers import scale

RAN = Path(os.environ["FN_RAN_MARKER"])
OPENED = []  # files this process opens while a job runs


def _opened(event, args):
    if event == "open" and OPENED and isinstance(args[0], (str, bytes, os.PathLike)):
        OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_opened)


def fn(x):
    RAN.write_text("fn ran")
    frame = pd.DataFrame({"x": np.arange(x + 1)})
    return {"value": scale(int(frame["x"].sum())), "tqdm": tqdm.__version__,
            "dateutil": dateutil.__version__, "numpy": np.__version__}


def job(**options):
    OPENED[:] = ["(job)"]
    results = gpar.apply(range(6), fn, progress=False, **options)
    opened, OPENED[:] = OPENED[1:], []
    image = results.report.image
    return {
        "results": list(results),
        "cache_hit": image.cache_hit,
        "layers": {layer.name: [layer.built, layer.sent] for layer in image.layers},
        # what the image step may read: the local module's source, distributions' records
        "read": sorted({path for path in opened if path.endswith("helpers.py")
                        or ".dist-info" in path or path.endswith(".zip")}),
    }
"""

MAIN = FN + """
first = job()
second = job()
Path("helpers.py").write_text("def scale(value):\\n    return 3 * value\\n")
third = job()


def outer(x):
    return [row["value"] for row in gpar.apply([x, x + 1], fn, progress=False)]


nested = list(gpar.apply(range(2), outer, progress=False))

import reduce_sql.commit  # noqa: E402

reduce_sql.commit.COMPACT_ABOVE_FILES = 1  # the batches' small files are merged...
reduce_sql.commit.COMPACT_FILE_ROWS = 8  # ...four tasks' rows a file, by the workers


def rows(x):
    return pd.DataFrame({"x": [x, x], "scaled": [scale(x), 0]})


written = gpar.apply(range(20), rows, output=Path("out").resolve(), progress=False)
output = {"merged": any("compact-" in file.path for file in written.manifest.files),
          "failures": len(written.failures),
          **written.sql("SELECT count(*) AS n, sum(scaled)::BIGINT AS s FROM data").to_pylist()[0]}
print(json.dumps({"first": first, "second": second, "third": third, "nested": nested,
                  "output": output,
                  "caller": {"tqdm": tqdm.__version__, "dateutil": dateutil.__version__,
                             "numpy": np.__version__}}))
"""

NONE = FN + """
from envpack import EnvironmentMismatch

try:  # elements the bare workers could not even unpickle (numpy scalars)
    gpar.apply(list(np.arange(6)), fn, packages="none", progress=False)
except EnvironmentMismatch as exc:
    print(json.dumps({"mismatch": str(exc), "fn_ran": RAN.exists()}))
"""


#: The idiom Ray's docs recommend: fn imports what it needs inside its body. The driver imports
#: numpy, gpar and a helper; pandas (compiled), joblib (pure Python), both absent on the
#: workers, and a local module are imported only inside fn.
INSIDE_FN = """
import json, os, stat, sys, time
from pathlib import Path

import numpy as np

import gpar
from helpers import scale


def fn(x):
    import joblib
    import pandas as pd

    import inner_helper

    return [scale(int(pd.Series(np.arange(x + 1)).sum())), inner_helper.offset(),
            joblib.__version__]


address = os.environ["BARE_ADDRESS"]
first = gpar.apply(range(4), fn, address=address, progress=False)
second = gpar.apply(range(4), fn, address=address, progress=False)
token = Path.home() / ".ray" / "auth_token"
print(json.dumps({
    "results": list(first), "again": list(second),
    "shipped": [layer.name for layer in first.report.image.layers if layer.sent],
    "second_cache_hit": second.report.image.cache_hit,
    "pandas_loaded_here": "pandas" in sys.modules,
    "joblib": __import__("joblib").__version__,
    "token_mode": oct(stat.S_IMODE(token.stat().st_mode)),
}))
"""

REFUSED = """
import json, os
import ray
import gpar

connects = []  # Ray's own connect retries a refused token for ~20 s before it fails
ray_init = ray.init
ray.init = lambda *args, **kwargs: connects.append(kwargs) or ray_init(*args, **kwargs)
try:
    gpar.apply([1], abs, address=os.environ["BARE_ADDRESS"], progress=False)
except gpar.GparError as error:
    print(json.dumps({"error": type(error).__name__, "message": str(error),
                      "connects": len(connects)}))
"""


def new_users_env(bare_address: str, tmp_path: Path, **overrides: str) -> dict[str, str]:
    """A driver's environment as a new user has it: nothing of Ray's set."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("RAY_") and key != "PYTHONPATH"}
    return {**env, "BARE_ADDRESS": bare_address,
            "ENVPACK_CACHE_DIR": str(tmp_path / "envpack-cache"), **overrides}


def run_script_in(tmp_path: Path, source: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    (tmp_path / "script.py").write_text(textwrap.dedent(source))
    return subprocess.run([sys.executable, "script.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def bare_address(tmp_path_factory):
    with running_cluster(bare_venv(), tmp_path_factory.mktemp("worker-cache")) as address:
        yield address


@pytest.fixture
def run_driver(bare_address, tmp_path):
    """Run a script as __main__ beside helpers.py, attached to the bare cluster."""

    def run(source: str) -> dict:
        (tmp_path / "helpers.py").write_text(textwrap.dedent(HELPERS))
        (tmp_path / "script.py").write_text(textwrap.dedent(source))
        env = {key: value for key, value in os.environ.items()  # no RAY_AUTH_MODE: a new user's
               if not key.startswith("RAY_") and key != "PYTHONPATH"}
        env.update(RAY_ADDRESS=bare_address, ENVPACK_CACHE_DIR=str(tmp_path / "envpack-cache"),
                   FN_RAN_MARKER=str(tmp_path / "fn-ran"))
        completed = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, env=env,
                                   capture_output=True, text=True, timeout=600)
        assert completed.returncode == 0, f"{completed.stdout}\n{completed.stderr}"
        return json.loads(completed.stdout.strip().splitlines()[-1])

    return run


def test_fn_runs_on_bare_workers_with_the_callers_packages(run_driver):
    out = run_driver(MAIN)
    first, second, third, caller = out["first"], out["second"], out["third"], out["caller"]

    expected = [2 * x * (x + 1) // 2 for x in range(6)]
    assert [row["value"] for row in first["results"]] == expected
    for row in first["results"]:
        assert row["tqdm"] == caller["tqdm"]
        assert row["numpy"] == caller["numpy"]
        assert row["dateutil"] == caller["dateutil"] != OLDER_DATEUTIL
    shipped = first["layers"]
    assert {"numpy", "pandas", "tqdm", "python-dateutil", "helpers", "gpar"} <= shipped.keys()
    assert all(built and sent for built, sent in shipped.values())

    assert second["results"] == first["results"]
    assert second["cache_hit"] is True, (first, second)
    assert second["layers"].keys() == shipped.keys()
    assert not any(built or sent for built, sent in second["layers"].values())
    # computing the image again read no file: no source, no record, no archive
    assert first["read"] and second["read"] == []

    assert [row["value"] for row in third["results"]] == [3 * v // 2 for v in expected]
    rebuilt = {name for name, (built, _) in third["layers"].items() if built}
    assert rebuilt == {"helpers"}

    assert out["nested"] == [[0, 3], [3, 9]]  # a nested apply on the workers: 3 * (x(x+1)/2)
    # output= on the bare workers: they write the Parquet and run the commit's merges
    assert out["output"] == {"merged": True, "failures": 0, "n": 40, "s": 3 * sum(range(20))}


def test_packages_none_names_what_the_workers_lack_before_fn_runs(run_driver):
    out = run_driver(NONE)
    message = out["mismatch"]
    assert "numpy: caller" in message and "worker not installed" in message
    assert "pandas: caller" in message and "tqdm: caller" in message
    assert "python-dateutil: caller 4" in message and f"worker {OLDER_DATEUTIL}" in message
    assert out["fn_ran"] is False


def test_envpack_show_with_an_address_lists_only_what_those_workers_lack(bare_address,
                                                                          tmp_path):
    (tmp_path / "helpers.py").write_text(textwrap.dedent(HELPERS))
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    completed = subprocess.run(
        [str(Path(sys.executable).with_name("envpack")), "show", "--address", bare_address,
         "dateutil", "tqdm", "helpers"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    assert completed.returncode == 0, completed.stderr
    rows = {line.split()[0]: line.split()[1] for line in completed.stdout.splitlines()[3:]
            if line.startswith("  ")}
    assert rows["python-dateutil"] == importlib.metadata.version("python-dateutil")
    assert rows["tqdm"] == importlib.metadata.version("tqdm")
    assert rows["helpers"] == "local"
    assert rows["tzdata"] == importlib.metadata.version("tzdata")  # python-dateutil needs it
    assert "ray" not in rows and "packaging" not in rows  # Ray and what it requires
    assert f"ships to the workers of {bare_address}" in completed.stdout


def test_imports_inside_fn_reach_a_token_protected_bare_cluster_by_address(bare_address,
                                                                          tmp_path):
    (tmp_path / "helpers.py").write_text(textwrap.dedent(HELPERS))
    (tmp_path / "inner_helper.py").write_text("def offset():\n    return 7\n")
    completed = run_script_in(tmp_path, INSIDE_FN, new_users_env(bare_address, tmp_path))

    assert completed.returncode == 0, f"{completed.stdout}\n{completed.stderr}"
    out = json.loads(completed.stdout.strip().splitlines()[-1])
    expected = [[2 * x * (x + 1) // 2, 7, out["joblib"]] for x in range(4)]
    assert out["results"] == expected and out["again"] == expected
    assert {"pandas", "joblib", "inner_helper"} <= set(out["shipped"])
    assert out["pandas_loaded_here"] is False  # found in fn's code, never imported here
    assert out["second_cache_hit"] is True  # the second job ships nothing new
    assert out["token_mode"] == "0o600"  # the token gpar relied on: its owner's only
    assert "InvalidAuthToken" not in completed.stderr


def test_a_wrong_token_is_one_clear_error_at_once(bare_address, tmp_path):
    env = new_users_env(bare_address, tmp_path, RAY_AUTH_TOKEN="0" * 64)
    completed = run_script_in(tmp_path, REFUSED, env)

    out = json.loads(completed.stdout.strip().splitlines()[-1])
    assert out["error"] == "ClusterConnectionError"
    assert "refused the token from RAY_AUTH_TOKEN" in out["message"]
    assert "ray get-auth-token" in out["message"]  # what to do
    assert out["connects"] == 0  # refused before Ray tries to connect
    assert completed.stderr == ""  # not one line of Ray's retry logs


def test_no_token_at_all_is_one_clear_error_at_once(bare_address, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    completed = run_script_in(tmp_path, REFUSED,
                              new_users_env(bare_address, tmp_path, HOME=str(home)))

    out = json.loads(completed.stdout.strip().splitlines()[-1])
    assert out["error"] == "ClusterConnectionError"
    assert "requires a token, and this process has none" in out["message"]
    assert out["connects"] == 0
    assert completed.stderr == ""
