"""factory_boy factories for the data model; faces point at tiny real JPEGs when asked."""
import io

import factory
from PIL import Image

from reviewapp.models import Dataset, Face, Flag, Identity, Membership, Round, Source


def jpeg_bytes(color=(120, 80, 60), size=(64, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="JPEG")
    return out.getvalue()


class DatasetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Dataset

    name = factory.Sequence(lambda n: f"dataset-{n}")


class SourceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Source

    dataset = factory.SubFactory(DatasetFactory)
    name = "main"
    format = Source.Format.FOLDER
    root = "/nonexistent"


class IdentityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Identity

    source = factory.SubFactory(SourceFactory)
    dataset = factory.SelfAttribute("source.dataset")
    name = factory.Sequence(lambda n: f"person_{n}")


class FaceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Face

    identity = factory.SubFactory(IdentityFactory)
    original_identity = factory.SelfAttribute("identity")
    source = factory.SelfAttribute("identity.source")
    dataset = factory.SelfAttribute("identity.dataset")
    path = factory.Sequence(lambda n: f"img/{n:06d}.jpg")
    size = 1000


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    dataset = factory.SubFactory(DatasetFactory)
    role = Membership.Role.REVIEWER


class RoundFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Round

    dataset = factory.SubFactory(DatasetFactory)
    number = factory.Sequence(lambda n: n + 1)
    method = Round.Method.ARCFACE
    status = Round.Status.PUBLISHED


class FlagFactory(factory.django.DjangoModelFactory):
    """A noisy face flag suggesting a relabel; pass kind/suggestion/identity_a.. for others."""

    class Meta:
        model = Flag

    face = factory.SubFactory(FaceFactory)
    round = factory.SubFactory(RoundFactory, dataset=factory.SelfAttribute("..face.dataset"))
    kind = Flag.Kind.NOISY
    score = factory.Sequence(lambda n: 1.0 - (n % 1000) / 1000.0)
    suggestion = Flag.Suggestion.REMOVE
    evidence = factory.LazyFunction(lambda: {"theta_y": 81.0, "theta_1": 52.0, "norm": 21.5})
