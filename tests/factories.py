"""factory_boy factories for the data model; faces point at tiny real JPEGs when asked."""
import io

import factory
from PIL import Image

from reviewapp.models import Dataset, Face, Identity, Membership, Source


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
