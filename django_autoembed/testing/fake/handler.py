"""The fake's HTTP: a threaded server on 127.0.0.1 and the handler that routes each request
to the embeddings endpoint or the Files and Batch APIs and sends their answer."""

from __future__ import annotations

import json
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, cast

from .batches import FilesAndBatches
from .embeddings import EmbeddingsAPI
from .protocol import Reply, api_error, key_refusal

if TYPE_CHECKING:
    from .server import FakeEmbeddingsServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's
        # algorithm and delayed ACKs add 40 ms to every small response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args: Any) -> None:
        pass

    @property
    def _loopback(self) -> LoopbackServer:
        return cast(LoopbackServer, self.server)

    def _send(self, reply: Reply) -> None:
        payload = reply.payload
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to answer

    def _refused_key(self) -> bool:
        """Whether the request's key is refused; if so, the 401 is sent."""
        authorization = self.headers.get("Authorization", "")
        refusal = key_refusal(authorization, self._loopback.fake.valid_keys)
        if refusal is not None:
            self._send(refusal)
        return refusal is not None

    def do_GET(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        if self._refused_key():
            return
        files = self._loopback.files
        parts = path.split("/")
        if len(parts) == 5 and path.startswith("/v1/files/") and parts[4] == "content":
            self._send(files.content(parts[3]))
        elif len(parts) == 4 and path.startswith("/v1/batches/"):
            self._send(files.show(parts[3]))
        elif path == "/v1/batches":
            self._send(files.listing())
        else:
            self._send(Reply(404, api_error(f"Invalid URL (GET {self.path})")))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        path = self.path.split("?")[0].rstrip("/")
        files = self._loopback.files
        if path == "/v1/files":
            if not self._refused_key():
                self._send(files.upload(self.headers.get("Content-Type", ""), raw))
        elif path == "/v1/batches":
            if not self._refused_key():
                self._send(files.create(raw))
        elif path.startswith("/v1/batches/") and path.endswith("/cancel"):
            if not self._refused_key():
                self._send(files.cancel(path.split("/")[3]))
        elif path == "/v1/embeddings":
            self._embeddings(raw)
        else:
            self._send(Reply(404, api_error(f"Invalid URL (POST {self.path})")))

    def _embeddings(self, raw: bytes) -> None:
        api = self._loopback.embeddings
        # Counted before the key is checked: tests count the requests a refused key costs.
        api.count_request()
        if self._refused_key():
            return
        admitted = api.admit(raw)
        if isinstance(admitted, Reply):
            return self._send(admitted)
        with api.answering(admitted.tokens):
            self._send(api.answer(admitted))


class LoopbackServer(ThreadingHTTPServer):
    """Listens on 127.0.0.1 from its creation; ``serve_forever`` answers."""

    # A real API takes a burst of new connections; the standard library's backlog of 5
    # refuses some of them when dozens of requests start at once.
    request_queue_size = 1024
    daemon_threads = True

    def __init__(
        self,
        port: int,
        fake: FakeEmbeddingsServer,
        embeddings: EmbeddingsAPI,
        files: FilesAndBatches,
    ) -> None:
        self.fake = fake
        self.embeddings = embeddings
        self.files = files
        super().__init__(("127.0.0.1", port), Handler)
