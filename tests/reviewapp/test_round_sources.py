"""A round's training set across several sources: each face carries its identity's source (the
survivor's after a merge), through the frozen snapshot to the dataset the trainer reads."""
import numpy as np
import pytest

from reviewapp.services.labels import identity_merge
from reviewapp.services.round_data import (
    RoundFaces,
    load_round_faces,
    round_face_dataset,
    round_faces_current,
    save_round_faces,
)
from tests.factories import FaceFactory, IdentityFactory, SourceFactory


@pytest.fixture
def two_sources(db):
    """Source ms: a (2 faces), b (1); source vgg, created second: a again (2), c (1)."""
    ms = SourceFactory(name="ms")
    vgg = SourceFactory(name="vgg", dataset=ms.dataset)
    ids = {"ms_a": IdentityFactory(name="a", source=ms), "ms_b": IdentityFactory(name="b", source=ms),
           "vgg_a": IdentityFactory(name="a", source=vgg), "vgg_c": IdentityFactory(name="c", source=vgg)}
    faces = {key: [FaceFactory(identity=ids[key]) for _ in range(n)]
             for key, n in (("ms_a", 2), ("ms_b", 1), ("vgg_a", 2), ("vgg_c", 1))}
    return ms.dataset, ids, faces


def test_each_face_carries_its_identitys_source(two_sources):
    dataset, ids, faces = two_sources
    snapshot = round_faces_current(dataset_id=dataset.pk)
    source_of_face = dict(zip(snapshot.face_ids.tolist(), snapshot.sources.tolist()))
    for key, expected in (("ms_a", 0), ("ms_b", 0), ("vgg_a", 1), ("vgg_c", 1)):
        assert [source_of_face[f.pk] for f in faces[key]] == [expected] * len(faces[key])


def test_a_merged_identitys_faces_take_the_survivors_source(two_sources):
    dataset, ids, faces = two_sources
    identity_merge(identity_id=ids["ms_a"].pk, into_id=ids["vgg_a"].pk, actor="t")
    snapshot = round_faces_current(dataset_id=dataset.pk)
    source_of_face = dict(zip(snapshot.face_ids.tolist(), snapshot.sources.tolist()))
    assert [source_of_face[f.pk] for f in faces["ms_a"]] == [1, 1]
    assert [source_of_face[f.pk] for f in faces["ms_b"]] == [0]
    # A class never spans two sources.
    for label in np.unique(snapshot.labels):
        assert len(set(snapshot.sources[snapshot.labels == label].tolist())) == 1


def test_one_source_is_all_zeros(db):
    identity = IdentityFactory()
    FaceFactory(identity=identity)
    FaceFactory(identity=IdentityFactory(source=identity.source))
    assert round_faces_current(dataset_id=identity.dataset_id).sources.tolist() == [0, 0]


def test_snapshot_keeps_sources_and_an_old_one_without_them_still_loads(two_sources, tmp_path):
    dataset, _, _ = two_sources
    snapshot = round_faces_current(dataset_id=dataset.pk)
    save_round_faces(snapshot, tmp_path / "faces.npz", round_key="k")
    loaded = load_round_faces(tmp_path / "faces.npz", round_key="k")
    np.testing.assert_array_equal(loaded.sources, snapshot.sources)

    old = RoundFaces(snapshot.face_ids, snapshot.labels, snapshot.identity_ids)
    np.savez(tmp_path / "old.npz", face_ids=old.face_ids, labels=old.labels, identity_ids=old.identity_ids,
             round_key=np.array("k"))  # the layout before sources
    loaded_old = load_round_faces(tmp_path / "old.npz", round_key="k")
    assert loaded_old is not None and loaded_old.sources is None
    np.testing.assert_array_equal(loaded_old.labels, snapshot.labels)


def test_the_training_dataset_hands_the_sources_to_the_trainer(two_sources):
    from ml.data.transforms import build_transform
    from ml.train.multihead import plan_heads
    from ml.train.trainer import TrainingData

    dataset, _, _ = two_sources
    snapshot = round_faces_current(dataset_id=dataset.pk)
    data = TrainingData.wrap(round_face_dataset(snapshot, dataset_id=dataset.pk, transform=build_transform(None)))
    np.testing.assert_array_equal(data.sources, snapshot.sources)
    # classes in identity-id order: ms a, ms b, vgg a, vgg c
    np.testing.assert_array_equal(plan_heads(data.labels, data.sources, data.num_classes), [0, 0, 1, 1])
