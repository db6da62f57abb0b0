"""Reading ids from a request: a positive integer the database column can hold, else None.
One definition for every view module, so that no view passes an overflowing id to a query."""

BIGINT_MAX = 2**63 - 1


def positive_int(value, limit: int = BIGINT_MAX) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if 0 < number <= limit else None
