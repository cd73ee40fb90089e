"""DRF's JSON parser, with JSON nested too deep for Python's parser as a 400.

`json.loads` recurses once per level of nesting and raises `RecursionError` (not a
`ValueError`) past about a thousand levels: a 200 KB body of `[` is a 500 through DRF's own
parser. The body size is already bounded (DATA_UPLOAD_MAX_MEMORY_SIZE), so catching the error
is enough; no legitimate body of this API nests more than a few levels.
"""

from typing import Any

from rest_framework import exceptions, parsers

TOO_DEEP_MESSAGE = "The JSON body is nested too deeply."


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise exceptions.ParseError(TOO_DEEP_MESSAGE, code="invalid_request") from exc
