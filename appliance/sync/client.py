"""Talking to the hub over HTTP(S) with the standard library only.

``http.client`` rather than ``urllib.request``: no proxy environment variables picked up
behind the box's back, one explicit timeout per request, and the certificate verified
against the system CAs or ``sync_ca_bundle``. Every failure becomes a ``SyncError``
here, in one place, so the worker only decides *when* to try again.
"""

from __future__ import annotations

import gzip
import http.client
import json
import ssl
import time
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from appliance import __version__
from appliance.errors import (
    HubAuthError,
    HubBusyError,
    HubCertificateError,
    HubRejectedError,
    HubUnreachableError,
    NotEnrolledError,
)

API = "/api/v1"
LONGEST_RETRY_AFTER = 3600.0  # a hub asking for longer is believed only this far
# What a kept connection that the other end closed while idle fails with.
STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


@dataclass(frozen=True)
class BatchAnswer:
    """The hub's answer to a batch: the keys it holds now, and the entries it refused
    (``{"id", "rev", "kind", "field", "message"}`` each)."""

    acked: list[tuple[str, int]]
    refused: list[dict[str, Any]]


class HubClient:
    def __init__(
        self,
        base_url: str,
        token: str = "",
        *,
        ca_bundle: str = "",
        timeout: float = 30.0,
        keep_alive: bool = False,
    ) -> None:
        """``keep_alive``: one connection for many requests until ``close()`` (the sync
        worker's pass); otherwise each request has its own, closed after it."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise NotEnrolledError(f"hub URL {base_url!r} is not an http(s) URL")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.context: ssl.SSLContext | None = None
        if self.scheme == "https":
            # create_default_context verifies the certificate and the host name.
            self.context = ssl.create_default_context(cafile=ca_bundle or None)
        self.bytes_sent = 0
        self.bytes_received = 0
        self.keep_alive = keep_alive
        self._kept: http.client.HTTPConnection | None = None
        self.sent_at = 0.0  # perf_counter when the last request went on the wire

    def close(self) -> None:
        """Drop the connection kept between requests (the end of a sync pass)."""
        if self._kept is not None:
            self._kept.close()
            self._kept = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.context is not None:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self.context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        compress: bool = False,
        answers: tuple[int, ...] = (),
    ) -> dict[str, Any]:
        """One request; returns the decoded JSON answer or raises a ``SyncError``.
        ``answers``: statuses besides 200 whose JSON object is an answer, not a failure."""
        send_headers = {"User-Agent": f"appliance/{__version__}", "Accept": "application/json"}
        if self.token:
            send_headers["Authorization"] = f"Bearer {self.token}"
        data = raw
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            send_headers["Content-Type"] = "application/json"
            if compress:
                data = gzip.compress(data, compresslevel=6)
                send_headers["Content-Encoding"] = "gzip"
        elif raw is not None:
            send_headers["Content-Type"] = "application/octet-stream"
        send_headers.update(headers or {})
        url = f"{self.prefix}{API}{path}"
        # One connection for a pass's requests (one TLS handshake, not one per request):
        # a kept connection the hub or a proxy closed while idle fails at once, and the
        # request goes again, once, on a new one. Every call here is idempotent.
        for last_try in (self._kept is None, True):
            if self._kept is None:
                self._kept = self._connection()
            try:
                self.sent_at = time.perf_counter()
                self._kept.request(method, url, body=data, headers=send_headers)
                response = self._kept.getresponse()
                payload = response.read()
                break
            except ssl.SSLCertVerificationError as exc:
                self.close()
                raise HubCertificateError(
                    f"the hub's certificate does not verify ({exc.verify_message}); "
                    "set sync_ca_bundle for a private CA"
                ) from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if not last_try and isinstance(exc, STALE):
                    continue
                reason = str(exc) or type(exc).__name__
                raise HubUnreachableError(f"{self.host}:{self.port}: {reason}") from exc
        if response.will_close or not self.keep_alive:
            self.close()
        self.bytes_sent += len(data or b"") + len(url) + 200  # request line and headers
        self.bytes_received += len(payload) + 200
        return self._answer(
            response.status, payload, response.getheader("Retry-After"), answers
        )

    def _answer(
        self,
        status: int,
        payload: bytes,
        retry_after: str | None = None,
        answers: tuple[int, ...] = (),
    ) -> dict[str, Any]:
        try:
            answer = json.loads(payload) if payload else {}
        except ValueError:
            answer = None
        if status in answers and isinstance(answer, dict):
            return answer
        message = ""
        if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
            message = str(answer["error"].get("message", ""))
        if status in (401, 403):
            raise HubAuthError(message or f"the hub refused this device ({status})", status=status)
        if status in (429, 503) and (retry_after or "").strip().isdigit():
            seconds = min(float(retry_after), LONGEST_RETRY_AFTER)
            raise HubBusyError(
                message or f"the hub is busy ({status}): again in {seconds:.0f} s",
                retry_after=seconds,
            )
        if 400 <= status < 500 and status not in (408, 429):
            raise HubRejectedError(message or f"the hub refused the request ({status})")
        if status != 200 or not isinstance(answer, dict):
            raise HubUnreachableError(message or f"the hub answered {status}")
        return answer

    # -- the hub's API -------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        return self.request("GET", "/ping")

    def enrol(self, code: str, name: str, public_key: str) -> dict[str, Any]:
        return self.request(
            "POST", "/enrol", {"code": code, "name": name, "public_key": public_key}
        )

    def send_entries(self, entries: list[dict[str, Any]]) -> list[tuple[str, int]]:
        answer = self.request("POST", "/entries", {"entries": entries}, compress=True)
        return [(str(e), int(r)) for e, r in answer.get("acked", [])]

    def send_batch(self, entries: list[dict[str, Any]]) -> BatchAnswer:
        """Send entries; the hub stores those that fit their schema and refuses each other
        one, naming the field (a 422 when it refused them all). A hub from before
        refusals answers ``acked`` alone: nothing is refused then."""
        answer = self.request(
            "POST", "/entries", {"entries": entries}, compress=True, answers=(422,)
        )
        if "refused" not in answer and isinstance(answer.get("error"), dict):
            # a 422 that is not a list of refusals: refused as a whole, as before
            raise HubRejectedError(str(answer["error"].get("message") or "refused (422)"))
        refused = [
            r
            for r in answer.get("refused") or []
            if isinstance(r, dict) and isinstance(r.get("id"), str) and type(r.get("rev")) is int
        ]
        return BatchAnswer(
            acked=[(str(e), int(r)) for e, r in answer.get("acked", [])], refused=refused
        )

    def known(self, keys: list[tuple[str, int]]) -> list[tuple[str, int]]:
        answer = self.request("POST", "/known", {"entries": [list(k) for k in keys]})
        return [(str(e), int(r)) for e, r in answer.get("acked", [])]

    def image_status(self, sha256: str) -> dict[str, Any]:
        return self.request("GET", f"/images/{sha256}")

    def put_chunk(self, sha256: str, index: int, data: bytes, digest: str) -> None:
        self.request(
            "PUT", f"/images/{sha256}/chunks/{index}", raw=data, headers={"X-Chunk-Sha256": digest}
        )

    def complete_image(self, sha256: str, size: int, chunks: int) -> dict[str, Any]:
        return self.request("POST", f"/images/{sha256}/complete", {"size": size, "chunks": chunks})

    # -- model bundles (appliance/sync/models.py) ----------------------------------
    def list_models(self) -> list[dict[str, Any]]:
        answer = self.request("GET", "/models")
        models = answer.get("models")
        return models if isinstance(models, list) else []

    def report_models(self, models: list[dict[str, str]]) -> None:
        self.request("POST", "/models/status", {"models": models})

    def download_range(
        self, sha256: str, sink: BinaryIO, offset: int, length: int, total: int
    ) -> int:
        """Append bytes ``offset`` .. ``offset + length - 1`` of bundle ``sha256`` (of
        ``total`` bytes) to ``sink`` as they arrive (a cut connection keeps what came:
        the caller resumes from the file's size). A hub that answers 200 sends the
        whole file: ``sink`` starts again from 0. Returns the bytes written."""
        url = f"{self.prefix}{API}/models/{sha256}"
        headers = {
            "User-Agent": f"appliance/{__version__}",
            "Range": f"bytes={offset}-{offset + length - 1}",
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = self._connection()
        written = 0
        try:
            conn.request("GET", url, headers=headers)
            response = conn.getresponse()
            if response.status not in (200, 206):
                # raises for any of them
                self._answer(response.status, response.read(), response.getheader("Retry-After"))
                raise HubUnreachableError(f"the hub answered {response.status}")
            if response.status == 200:
                sink.seek(0)
                sink.truncate()
                length = total  # the whole file, from its start
            while written < length:
                block = response.read1(min(1 << 16, length - written))  # keeps a cut tail
                if not block:
                    break
                sink.write(block)
                written += len(block)
                self.bytes_received += len(block)
        except ssl.SSLCertVerificationError as exc:
            raise HubCertificateError(f"the hub's certificate does not verify ({exc})") from exc
        except (OSError, http.client.HTTPException) as exc:
            reason = str(exc) or type(exc).__name__
            raise HubUnreachableError(f"{self.host}:{self.port}: {reason}") from exc
        finally:
            sink.flush()
            conn.close()
            self.bytes_sent += len(url) + 200
        if written < length:
            raise HubUnreachableError(f"{self.host}:{self.port}: the download was cut short")
        return written
