"""ml.io.embeddings_file: user rows matched to faces by path."""
import numpy as np
import pytest

from ml.io.embeddings_file import check_embeddings_file, load_embeddings_file, match_rows


def test_rows_match_by_relative_or_absolute_path_and_the_rest_is_reported():
    faces = ["a/1.jpg", "a/2.jpg", "b/1.jpg", "a/1.jpg"]
    roots = ["/data/one", "/data/one", "/data/one", "/data/two"]  # two sources, one relative path
    rows = ["./b/1.jpg", "/data/two/a/1.jpg", "a/1.jpg", "zzz.jpg", "a/1.jpg"]

    match = match_rows(faces, roots, rows)

    assert match.rows.tolist() == [2, -1, 0, 1]
    assert (match.missing, match.missing_examples) == (1, ["a/2.jpg"])
    assert (match.extra, match.extra_examples) == (1, ["zzz.jpg"])
    assert match.repeated == 1  # the second "a/1.jpg" row


def test_npy_with_paths_file_and_length_checks(tmp_path):
    np.save(tmp_path / "e.npy", np.ones((2, 3), dtype=np.float32))
    (tmp_path / "p.txt").write_text("x/1.jpg \ny/2.jpg\n")
    given = load_embeddings_file(str(tmp_path / "e.npy"), str(tmp_path / "p.txt"))
    assert given.paths == ["x/1.jpg", "y/2.jpg"] and given.embeddings.shape == (2, 3)
    (tmp_path / "p.txt").write_text("x/1.jpg\n")
    with pytest.raises(ValueError, match="1 paths for 2"):
        load_embeddings_file(str(tmp_path / "e.npy"), str(tmp_path / "p.txt"))
    np.save(tmp_path / "flat.npy", np.ones(4))
    with pytest.raises(ValueError, match="N x D"):
        check_embeddings_file(str(tmp_path / "flat.npy"))
