from PIL import Image

from ml.sample import make_sample


def test_sample_has_identities_outsiders_and_decodable_images(tmp_path):
    make_sample(tmp_path, identities=3, images=4, outsiders=2, seed=1)
    names = (tmp_path / "identities.txt").read_text().split()
    pool = (tmp_path / "pool.txt").read_text().split()
    assert names == ["person_000", "person_001", "person_002"]
    assert len(pool) == 2 and all((tmp_path / "images" / p).is_file() for p in pool)
    for name in names:
        files = sorted((tmp_path / "images" / name).iterdir())
        assert len(files) == 4
        with Image.open(files[0]) as image:
            assert image.size == (112, 112)


def test_sample_is_deterministic_per_seed(tmp_path):
    make_sample(tmp_path / "a", identities=2, images=2, outsiders=1, seed=3)
    make_sample(tmp_path / "b", identities=2, images=2, outsiders=1, seed=3)
    make_sample(tmp_path / "c", identities=2, images=2, outsiders=1, seed=4)
    first = (tmp_path / "a/images/person_000/000.jpg").read_bytes()
    assert first == (tmp_path / "b/images/person_000/000.jpg").read_bytes()
    assert first != (tmp_path / "c/images/person_000/000.jpg").read_bytes()
