"""ml/ stands on its own: importing every module of it loads no Django."""
import pkgutil
import subprocess
import sys
from pathlib import Path

import ml

ROOT = Path(__file__).resolve().parent.parent.parent


def test_no_ml_module_imports_django():
    modules = sorted(m.name for m in pkgutil.walk_packages(ml.__path__, "ml.") if not m.name.endswith("__main__"))
    assert "ml.train.trainer" in modules and "ml.io.recordio" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
