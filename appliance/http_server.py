"""waitress, answering its own errors in the one JSON error shape.

waitress refuses some requests before the app runs: a body over
``max_request_body_size`` (413, read no further), a malformed request (400), headers too
large (431), an exception after the response started (500). It answers those with a
plain-text page; here they become ``{"error": {"code": ..., "message": ...}}`` like every
other error of the box and the hub, so a client handles errors in one place.
"""

from __future__ import annotations

import json
from typing import Any

from waitress import create_server as create_waitress_server
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer
from waitress.task import ErrorTask


class JsonErrorTask(ErrorTask):
    def execute(self) -> None:
        error = self.request.error
        body = json.dumps(
            {
                "error": {
                    "code": error.reason.lower().replace(" ", "_"),
                    "message": f"{error.reason}: {error.body}",
                }
            }
        ).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend(
            [
                ("Content-Type", "application/json"),
                ("X-Content-Type-Options", "nosniff"),
                ("Cache-Control", "no-store"),
            ]
        )
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(HTTPChannel):
    error_task_class = JsonErrorTask


def create_server(app: Any, **adjustments: Any) -> Any:
    """``waitress.create_server`` whose own error answers are JSON."""
    server = create_waitress_server(app, **adjustments)
    listeners = [server, *(getattr(server, "map", None) or {}).values()]
    for listener in listeners:
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = JsonErrorChannel
    return server
