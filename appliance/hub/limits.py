"""How much the hub accepts per request, and reading a JSON body within that.

An unauthenticated 64 KB gzip body inflating to 63 MB of JSON once took the hub from
64 MB to 1.7 GB of memory, and three at once killed it. Now every endpoint has its own
``Limit`` and a body is refused (413, the one JSON error shape) at the first limit it
passes:

1. ``body``: bytes as sent, by Content-Length before anything is read (waitress also
   refuses anything over ``LARGEST_BODY`` before the app runs).
2. ``inflated``: gzip is inflated piece by piece, never past this many bytes.
3. ``values``: before ``json.loads`` builds anything, the text is counted. Every JSON
   value after the first needs a ``,`` ``:`` ``[`` or ``{``, so their count bounds the
   objects the parser can build (characters inside strings are counted too, which only
   errs on the safe side). ``depth``: the parser stops at Python's recursion limit
   (a RecursionError, answered 400), and the parsed value is then walked, without
   recursion, against the endpoint's much smaller limit.
4. At most ``PARSERS`` bodies are inflated and parsed at once, so the worst case is
   ``PARSERS`` times the largest endpoint's bound whatever the number of connections.

With the figures below one parse holds at most ~60 MB (4 MB of text, the same as a str,
up to 4 bytes a character, and ~100 bytes per value), so the hub stays far below
300 MB under any number of such requests (``tests/hub/test_limits.py`` measures it).
"""

from __future__ import annotations

import json
import threading
import zlib
from dataclasses import dataclass
from typing import Any

from flask import request
from werkzeug.exceptions import (
    BadRequest,
    RequestEntityTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
)

KB = 1024
MB = 1024 * KB


@dataclass(frozen=True)
class Limit:
    body: int  # bytes as sent
    inflated: int  # bytes once inflated (a plain body: the same as ``body``)
    values: int  # JSON values of every kind
    depth: int  # nesting of arrays and objects


LIMITS = {
    # {"code", "name", "public_key"}: a few hundred bytes.
    "api.enrol": Limit(body=4 * KB, inflated=4 * KB, values=16, depth=2),
    # The box asks about 1000 [id, revision] pairs at a time (sync.worker.KNOWN_BATCH).
    "api.known": Limit(body=512 * KB, inflated=512 * KB, values=20_000, depth=4),
    # sync_batch_size is at most 1000 results of ~1-2 KB (gzip makes them ~5x smaller).
    "api.entries": Limit(body=4 * MB, inflated=4 * MB, values=250_000, depth=16),
    "api.image_complete": Limit(body=1 * KB, inflated=1 * KB, values=8, depth=2),
    # At most distribution.MAX_REPORTED {"name", "version", "state"} of short text.
    "api.model_status": Limit(body=64 * KB, inflated=64 * KB, values=2_000, depth=3),
}
OTHER = Limit(body=1 * KB, inflated=1 * KB, values=8, depth=2)
PARSERS = 2
PARSE_WAIT_SECONDS = 30.0
PARSE_RETRY_AFTER_S = 5  # what a box that found every parser busy is told
PIECE = 64 * KB

# Images travel raw, in chunks of sync_image_chunk_kb (at most 8192 KB).
MAX_CHUNK_BYTES = 8 * MB
MAX_CHUNKS = 16_384  # chunk indexes 0..16383 of one image
MAX_IMAGE_BYTES = 4 * 1024 * MB
MAX_PARTIAL_IMAGES = 4  # images of one box being received at once (it sends one at a time)
PARTS_TTL_SECONDS = 24 * 3600  # an unfinished image untouched this long is deleted

# Training exports sent with sync (training_api.py) travel in the same chunks; each file
# is bounded by the export's own limits (wire/training_verify.max_bytes), and:
MAX_TRAINING_EXPORT_BYTES = 16 * 1024 * MB  # one export's files together
MAX_TRAINING_UPLOADS = 2  # exports of one box being received at once (it sends one at a time)

LARGEST_BODY = MAX_CHUNK_BYTES + 64 * KB  # waitress and Flask refuse more, unread

_parsers = threading.BoundedSemaphore(PARSERS)


def endpoint_limit() -> Limit:
    return LIMITS.get(request.endpoint or "", OTHER)


def too_large(what: str) -> RequestEntityTooLarge:
    return RequestEntityTooLarge(description=f"{what} for {request.path}")


def read_body(max_bytes: int) -> bytes:
    """The raw body, refused by its Content-Length before it is read, or as soon as
    reading passes ``max_bytes`` (a chunked body has none)."""
    if (request.content_length or 0) > max_bytes:
        raise too_large(f"the body is larger than {max_bytes} bytes")
    data = request.stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise too_large(f"the body is larger than {max_bytes} bytes")
    return data


def inflate(raw: bytes, cap: int) -> bytes:
    """gzip ``raw`` inflated in pieces, refused as soon as it passes ``cap`` bytes."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = bytearray()
    try:
        for start in range(0, len(raw), PIECE):
            data = raw[start : start + PIECE]
            while data and not inflater.eof:
                out += inflater.decompress(data, cap + 1 - len(out))
                if len(out) > cap:
                    raise too_large(f"the body inflates to more than {cap} bytes")
                data = inflater.unconsumed_tail
            if inflater.eof:
                if inflater.unused_data or start + PIECE < len(raw):
                    raise BadRequest(description="data after the end of the gzip stream")
                break
    except zlib.error as exc:
        raise BadRequest(description=f"the gzip body is corrupt: {exc}") from exc
    if not inflater.eof:
        raise BadRequest(description="the gzip body is cut short")
    return bytes(out)


def check_json_size(text: bytes, limit: Limit) -> None:
    """Refuse JSON that could build more than ``limit.values`` values, before the parser
    builds any of it."""
    values = 1 + sum(text.count(mark) for mark in (b",", b":", b"[", b"{"))
    if values > limit.values:
        raise too_large(f"the JSON holds more than {limit.values} values")


def check_json_depth(value: Any, limit: Limit) -> None:
    """Refuse parsed JSON nested deeper than ``limit.depth`` (walked without recursion;
    the parser itself stops at Python's recursion limit with a RecursionError)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= limit.depth:
                raise BadRequest(description=f"the JSON nests deeper than {limit.depth} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def json_body() -> Any:
    """The request's JSON within its endpoint's ``Limit`` (see the module docstring)."""
    limit = endpoint_limit()
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise UnsupportedMediaType(description=f"Content-Encoding {encoding!r}: use gzip")
    raw = read_body(limit.body)
    if not _parsers.acquire(timeout=PARSE_WAIT_SECONDS):
        raise ServiceUnavailable(
            description="the hub is busy: send again shortly", retry_after=PARSE_RETRY_AFTER_S
        )
    try:
        text = inflate(raw, limit.inflated) if encoding == "gzip" else raw
        del raw
        if len(text) > limit.inflated:
            raise too_large(f"the body is larger than {limit.inflated} bytes")
        check_json_size(text, limit)
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise BadRequest(description=f"the body is not JSON: {exc}") from None
        del text
        check_json_depth(value, limit)
        return value
    finally:
        _parsers.release()
