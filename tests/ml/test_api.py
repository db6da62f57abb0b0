"""ml.api, the app's one door into ml: light at import, and the run folder's names are ml's own."""
import subprocess
import sys
from pathlib import Path

import numpy as np

import ml.api
from ml import crossfit, embed, pretrained

ROOT = Path(__file__).resolve().parent.parent.parent


def test_importing_the_facade_loads_neither_torch_nor_faiss_nor_django():
    code = ("import sys, ml.api; "
            "print(sorted({'torch', 'faiss', 'django'} & {m.split('.')[0] for m in sys.modules}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_heavy_names_load_on_first_access():
    from ml.mining.config import MiningConfig
    from ml.train.config import TrainConfig

    assert ml.api.MiningConfig is MiningConfig and ml.api.TrainConfig is TrainConfig
    assert ml.api.train_config("cpu_small.py", ["epochs=2"]).epochs == 2


def test_the_run_folder_names_the_files_the_extractors_write(tmp_path):
    run = ml.api.RunFolder(tmp_path)
    assert run.extraction.embeddings == tmp_path / crossfit.EMBEDDINGS_DIR / embed.EMBEDDINGS_FILE
    assert run.extraction.unreadable.name == embed.UNREADABLE_FILE and run.extraction.norms.name == embed.NORMS_FILE
    assert run.extraction.alignment.name == pretrained.ALIGNMENT_FILE
    assert run.folds == tmp_path / crossfit.FOLDS_FILE and run.fold(1).root == crossfit.fold_dir(tmp_path, 1)


def test_search_embeddings_prefer_the_extraction_then_the_given_file_then_the_first_fold(tmp_path):
    run = ml.api.RunFolder(tmp_path)
    assert run.search_embeddings("given.npy") == Path("given.npy")
    run.fold(0).extraction.root.mkdir(parents=True)
    np.save(run.fold(0).extraction.embeddings, np.zeros((1, 2), dtype=np.float32))
    assert run.search_embeddings() == run.fold(0).extraction.embeddings
    run.extraction.root.mkdir()
    np.save(run.extraction.embeddings, np.zeros((1, 2), dtype=np.float32))
    assert run.search_embeddings("given.npy") == run.extraction.embeddings


def test_the_identity_index_skips_unreadable_rows_and_refuses_another_rounds_file(tmp_path):
    extraction = ml.api.RunFolder(tmp_path).extraction
    extraction.root.mkdir()
    rows = np.array([[1, 0], [0, 1], [0, 3], [np.nan, 1]], dtype=np.float32)
    np.save(extraction.embeddings, rows)
    extraction.unreadable.write_text("[1]")
    path = ml.api.identity_index_write(tmp_path / "centres.npz", embeddings_path=extraction.embeddings,
                                       labels=np.array([0, 0, 1, 1]), count=2, identity_ids=np.array([10, 20]),
                                       face_ids=np.array([5, 6, 7, 8]), key="round 1")
    index = ml.api.identity_index_load(path, key="round 1")
    np.testing.assert_allclose(index.centres, [[1, 0], [0, 1]], atol=1e-6)
    assert index.face_row(7) == 2 and index.face_row(9) is None
    assert index.nearest(index.centre_of(20), 2)[0][0] == 20
    assert ml.api.identity_index_load(path, key="round 2") is None
    assert ml.api.identity_index_load(tmp_path / "missing.npz", key="round 1") is None
