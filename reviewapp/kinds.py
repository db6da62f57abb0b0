"""What each flag kind is called, in one place, and the order every page lists kinds in.

The stored value `low_norm` predates the kind's wider meaning (a low feature norm, a blurred
image or no face found): reviewers see "Low quality" everywhere. The decision that sets a face
aside is called "Mark low quality" so that the kind and the action are not confused.
"""
from .models import Flag

# The order of queue tabs, table rows and chart bars: face kinds by harm, then pairs.
KIND_ORDER = (
    Flag.Kind.NOISY,
    Flag.Kind.HARD,
    Flag.Kind.LOW_NORM,
    Flag.Kind.NEAR_DUPLICATE,
    Flag.Kind.DUPLICATE_IDENTITY,
)

# (one flag, several flags): "1 noisy face", "3 near duplicates".
_NAMES = {
    Flag.Kind.NOISY: ("Noisy", "Noisy"),
    Flag.Kind.HARD: ("Hard", "Hard"),
    Flag.Kind.LOW_NORM: ("Low quality", "Low quality"),
    Flag.Kind.NEAR_DUPLICATE: ("Near duplicate", "Near duplicates"),
    Flag.Kind.DUPLICATE_IDENTITY: ("Duplicate identity", "Duplicate identities"),
}


def kind_title(kind: str, count: int | None = None) -> str:
    """The kind's name as a title: singular for a count of 1 or a single flag (count None is a
    heading over many, so plural)."""
    one, many = _NAMES.get(kind, (kind, kind))
    return one if count == 1 else many


def kind_choices() -> list[tuple[str, str]]:
    """(value, plural title) in page order: queue tabs and filter menus."""
    return [(kind, kind_title(kind)) for kind in KIND_ORDER]
