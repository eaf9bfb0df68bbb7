"""A local OpenAI-compatible chat-completions server for tests, benchmarks and offline trials of ``enrich``.

It listens on 127.0.0.1 only, answers ``POST /v1/chat/completions`` with a deterministic reply (by default a
difficulty rating in JSON, chosen from a hash of the prompt), counts requests, and can be told to misbehave:
``server.script(429, 500, "garbage", "slow", "unparseable", "echo-auth", "echo-nested")`` makes the next
requests answer those ways, one each, before it goes back to normal (``echo-nested`` puts the
``Authorization`` header and the request path, query included, deep inside the reply's JSON). With
``api_key`` set it answers 401 to any other key, echoing the ``Authorization`` header it got (as some servers
do), so tests can check the key never leaks.

    with ChatServer(latency=0.05) as server:
        enrich("arc1:evaluation", "out.jsonl", base_url=server.url, model="m", preset="difficulty")
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Action = int | str


def difficulty_reply(prompt: str) -> str:
    """The default answer: a JSON difficulty rating picked from a hash of the prompt."""
    level = ("low", "medium", "high")[hashlib.sha256(prompt.encode()).digest()[0] % 3]
    return json.dumps({"difficulty": level, "rationale": f"rated {level} by the local test server"})


class ChatServer:
    """Threaded OpenAI-style server on 127.0.0.1 (a context manager); see the module docstring."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        api_key: str | None = None,
        responder: Callable[[str], str] = difficulty_reply,
        slow_seconds: float = 2.0,
    ):
        self.latency = latency
        self.api_key = api_key
        self.responder = responder
        self.slow_seconds = slow_seconds
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        """Most requests the server was handling at once (shows the client's concurrency bound)."""
        self.statuses: Counter[int] = Counter()
        self.prompts: list[str] = []
        self._script: deque[Action] = deque()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes; without NODELAY, Nagle's algorithm holds the body
                # until the client's delayed ACK (~40 ms), which would swamp the latency being simulated.
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                with server._lock:
                    server.statuses[status] += 1

            def do_POST(self) -> None:
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._handle()
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _handle(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                with server._lock:
                    server.requests += 1
                    action = server._script.popleft() if server._script else "ok"
                # The query (a key some endpoints take as ?key=...) is not part of the route.
                route = urllib.parse.urlsplit(self.path).path
                if not route.rstrip("/").endswith("/chat/completions"):
                    return self._send(404, b'{"error": {"message": "not found"}}')
                auth = self.headers.get("Authorization", "")
                if server.api_key is not None and auth != f"Bearer {server.api_key}":
                    msg = {"error": {"message": f"invalid API key in header {auth!r}"}}
                    return self._send(401, json.dumps(msg).encode())
                try:
                    req = json.loads(raw)
                    prompt = req["messages"][-1]["content"]
                    model = req["model"]
                except (json.JSONDecodeError, KeyError, IndexError, TypeError):
                    return self._send(400, b'{"error": {"message": "bad request"}}')
                with server._lock:
                    server.prompts.append(prompt)
                if server.latency:
                    time.sleep(server.latency)
                if isinstance(action, int):
                    return self._send(
                        action, b'{"error": {"message": "scripted failure"}}', {"Retry-After": "0"}
                    )
                if action == "slow":
                    time.sleep(server.slow_seconds)
                if action == "garbage":
                    return self._send(200, b'{"choices": [{"message": {"content": "trunc')
                if action == "unparseable":
                    content = "I think it is fairly hard, honestly."
                elif action == "echo-auth":
                    content = json.dumps({"difficulty": "low", "rationale": f"you sent {auth}"})
                elif action == "echo-nested":
                    seen = {"request": {"headers": [{"authorization": auth}], "path": self.path}}
                    content = json.dumps({"difficulty": "low", "rationale": "echoed", "echo": seen})
                else:
                    content = server.responder(prompt)
                body = {
                    "id": "chatcmpl-local",
                    "object": "chat.completion",
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": len(prompt.split()),
                        "completion_tokens": len(content.split()),
                        "total_tokens": len(prompt.split()) + len(content.split()),
                    },
                }
                self._send(200, json.dumps(body).encode())

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.request_queue_size = 256
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="chat-server", daemon=True)

    @property
    def url(self) -> str:
        """The API root to pass as ``base_url``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def script(self, *actions: Action) -> None:
        """Answer the next requests with these actions, one each: an HTTP status, 'slow', 'garbage',
        'unparseable', 'echo-auth' or 'echo-nested'."""
        with self._lock:
            self._script.extend(actions)

    def start(self) -> ChatServer:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


__all__ = ["ChatServer", "difficulty_reply"]
