"""DRF's JSON parser with the nesting bound of reviewapp.json_bounds: a body nested deeper is a
400 ("JSON parse error - nested deeper than 64 levels"), not a RecursionError 500."""
import codecs

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser, get_encoding
from rest_framework.utils import json as drf_json

from ..json_bounds import loads_bounded


class BoundedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        encoding = get_encoding(parser_context or {})
        try:
            text = codecs.getreader(encoding)(stream).read()
            return loads_bounded(text, parse_constant=drf_json.strict_constant if self.strict else None)
        except ValueError as exc:  # JSONDecodeError, JSONTooDeep, a bad encoding
            raise ParseError(f"JSON parse error - {exc}") from None
