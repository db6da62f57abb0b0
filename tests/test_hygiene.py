"""The test suite's own hygiene: each run has its own test database, broker keys and var dir
(config/settings_test.py), leaves no folder in the temp directory and fails loudly if it does,
and finds the real face data through FACECLEAN_TEST_DATA, counting what skipped without it."""
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import DATA_ENV, DEFAULT_DATA, _require, face_data_root

ROOT = Path(__file__).resolve().parent.parent
RUN_NAMES = {"FACECLEAN_TEST_RUN", "FACECLEAN_VAR_DIR", DATA_ENV}


def _clean_env(**overrides) -> dict:
    """This process's environment without its run's names: a child starts a run of its own."""
    env = {k: v for k, v in os.environ.items() if k not in RUN_NAMES}
    env.update(overrides)
    return env


def _temp_folders(run: str) -> list[Path]:
    return sorted(Path(tempfile.gettempdir()).glob(f"faceclean-test-{run}-*"))


def _settings_of_a_new_process(**env) -> dict:
    code = (
        "import config.settings_test as s;"
        "print(s.TEST_RUN, s.DATABASES['default']['TEST']['NAME'],"
        " s.CELERY_BROKER_TRANSPORT_OPTIONS.get('global_keyprefix'), s.VAR_DIR, s.VAR_DIR.is_dir())"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_clean_env(**env),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    run, db, prefix, var_dir, existed = result.stdout.split()
    return {"run": run, "db": db, "prefix": prefix, "var_dir": Path(var_dir), "existed": existed == "True"}


# -- per-run names -----------------------------------------------------------------------------------

SHARED_SERVERS = {"DATABASE_URL": "postgres://u@db.example:5432/fc", "CELERY_BROKER_URL": "redis://r:6379/3"}


def test_two_runs_on_the_same_servers_get_different_databases_and_broker_keys():
    first = _settings_of_a_new_process(**SHARED_SERVERS)
    second = _settings_of_a_new_process(**SHARED_SERVERS)
    assert first["run"] != second["run"]
    assert first["db"] == f"test_fc_{first['run']}" and second["db"] == f"test_fc_{second['run']}"
    assert first["prefix"] == f"faceclean-test-{first['run']}:"
    assert second["prefix"] == f"faceclean-test-{second['run']}:"
    # Each made its own var dir and removed it when it exited.
    assert first["existed"] and first["var_dir"].name.startswith(f"faceclean-test-{first['run']}-")
    assert not first["var_dir"].exists() and not second["var_dir"].exists()


def test_a_worker_inherits_the_runs_names_and_leaves_its_var_dir_alone(tmp_path):
    run = f"w{secrets.token_hex(3)}"
    child = _settings_of_a_new_process(**SHARED_SERVERS, FACECLEAN_TEST_RUN=run, FACECLEAN_VAR_DIR=str(tmp_path))
    assert (child["run"], child["db"], child["prefix"]) == (run, f"test_fc_{run}", f"faceclean-test-{run}:")
    assert child["var_dir"] == tmp_path and tmp_path.is_dir()
    assert _temp_folders(run) == []


def test_this_run_uses_its_own_names():
    run = settings.TEST_RUN
    assert os.environ["FACECLEAN_TEST_RUN"] == run
    assert Path(settings.VAR_DIR).name.startswith(f"faceclean-test-{run}-")
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        assert Path(settings.DATABASES["default"]["TEST"]["NAME"]).parent == Path(settings.VAR_DIR)
    else:
        assert settings.DATABASES["default"]["TEST"]["NAME"].endswith(f"_{run}")


def test_the_embedded_broker_has_no_key_prefix(tmp_path):
    code = "import config.settings_test as s; print(s.CELERY_BROKER_TRANSPORT_OPTIONS.get('global_keyprefix'))"
    env = {k: v for k, v in _clean_env().items() if k not in SHARED_SERVERS}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None"]


# -- the face data -----------------------------------------------------------------------------------

def test_the_data_folder_comes_from_the_environment_first(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert face_data_root() == tmp_path
    (tmp_path / "att_faces").mkdir()
    assert _require("att_faces") == tmp_path / "att_faces"
    with pytest.raises(pytest.skip.Exception, match=rf"face data not found: no {tmp_path}/lfw \(set {DATA_ENV} "):
        _require("lfw")
    monkeypatch.delenv(DATA_ENV)
    assert face_data_root() == DEFAULT_DATA == ROOT.parent / "shared" / "data"


def test_the_face_data_has_the_layout_the_tests_expect(att_root, lfw_root):
    assert (att_root / "s1" / "1.pgm").is_file()
    assert (lfw_root / "images_deepfunneled").is_dir() and (lfw_root / "splits" / "eval_pairs.tsv").is_file()


# -- a whole run, in a child process -------------------------------------------------------------------

# pytest in a child, given plugins; a plugin may leave a folder under the child run's prefix.
CHILD = """
import sys, tempfile, pytest
class Leak:
    def pytest_runtest_teardown(self, item):
        tempfile.mkdtemp(prefix="faceclean-test-" + sys.argv[1] + "-leak")
sys.exit(pytest.main(["-p", "no:cacheprovider", "-q", sys.argv[2]], plugins=[Leak()] if sys.argv[3] == "1" else []))
"""
LAYOUT_TEST = "tests/test_hygiene.py::test_the_face_data_has_the_layout_the_tests_expect"


def _child_run(tmp_path, leak: bool) -> tuple[str, subprocess.CompletedProcess]:
    run = f"c{secrets.token_hex(3)}"
    result = subprocess.run(
        [sys.executable, "-c", CHILD, run, LAYOUT_TEST, "1" if leak else "0"], cwd=ROOT,
        env=_clean_env(FACECLEAN_TEST_RUN=run, **{DATA_ENV: str(tmp_path / "nothing-here")}),
        capture_output=True, text=True, timeout=120,
    )
    return run, result


def test_a_run_without_data_says_how_many_skipped_and_leaves_no_folder(tmp_path):
    run, result = _child_run(tmp_path, leak=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    assert (f"1 test skipped for lack of face data (looked in {tmp_path / 'nothing-here'}): "
            f"set {DATA_ENV} to a folder holding att_faces/ and lfw/ to run them") in result.stdout
    assert _temp_folders(run) == []


def test_a_run_that_leaves_a_folder_fails_and_names_it(tmp_path):
    run, result = _child_run(tmp_path, leak=True)
    leaked = _temp_folders(run)
    for folder in leaked:
        folder.rmdir()
    assert len(leaked) == 1 and leaked[0].name.startswith(f"faceclean-test-{run}-leak")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"ERROR: the run left {leaked[0]} in the temp directory" in result.stdout
