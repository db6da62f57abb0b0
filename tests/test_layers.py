"""The layers hold: the import-linter contracts of .importlinter (views -> services -> selectors
-> models, tasks -> services, task modules behind the queueing seam, ml through ml.api alone and
never importing the app) all pass. On a failure the message names the import chain."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")  # installed by requirements-dev.txt


def test_the_import_contracts_are_kept():
    result = subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", str(ROOT / ".importlinter")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    # Every contract was read and checked, none skipped by a typo in the file.
    assert "Contracts: 5 kept, 0 broken." in result.stdout, result.stdout
