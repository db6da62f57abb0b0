"""JSON from requests, with its nesting bounded.

No request of this app needs more than a few levels; a body nested thousands deep makes the
json module (and every recursive walk after it) raise RecursionError, a 500. Both the API's
parser and the browser's JSON boxes read through loads_bounded, so such input is a 400."""
import json
from typing import Any

MAX_JSON_DEPTH = 64


class JSONTooDeep(ValueError):
    def __init__(self):
        super().__init__(f"nested deeper than {MAX_JSON_DEPTH} levels")


def json_depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether value nests more than limit lists/objects; iterative, so any depth is safe."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def loads_bounded(text: str | bytes, **kwargs) -> Any:
    """json.loads, raising JSONTooDeep (a ValueError) for input nested deeper than MAX_JSON_DEPTH."""
    try:
        value = json.loads(text, **kwargs)
    except RecursionError:  # the C scanner's own limit (about 1,000 levels) came first
        raise JSONTooDeep() from None
    if json_depth_exceeds(value):
        raise JSONTooDeep()
    return value
