"""A small local OpenAI-compatible HTTP server, for tests and offline notebooks.

The real `openai` client talks to it through `base_url`, so code under test
runs exactly as it would against api.openai.com, with no key and no network:

    with OpenAIServer() as server:
        client = server.client()          # openai.OpenAI(base_url=server.base_url, ...)
        client.chat.completions.create(model="gpt-4o-mini", messages=[...])
        server.chat_requests[-1]          # what the code sent: check the prompt

- POST /v1/chat/completions records every request and replies deterministically:
  the reply names the question and quotes the start of the context it was given,
  so a test can tell which text reached the model and which reply came back.
- POST /v1/embeddings returns `HashingEmbedder` vectors (same text, same vector, in
  every process), as floats or base64 like the real API.
- GET /v1/models lists the two models it answers for.

Standard library only (http.server in a daemon thread), loopback only, a free port.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from redis_workbook.embeddings import HashingEmbedder

CHAT_MODEL = "gpt-4o-mini"
EMBEDDING_MODEL = "text-embedding-3-small"
EMBEDDING_DIM = 1536  # text-embedding-3-small's width, so OpenAIEmbedder() works unchanged
QUOTE_WORDS = 25


class OpenAIServer:
    """Serve the chat and embeddings endpoints on 127.0.0.1; a context manager.

    `api_key`: when set, requests must carry `Authorization: Bearer <api_key>` (401 otherwise),
    which lets a test check that the key was passed through. `embedding_dim`: the width of
    embeddings when a request does not ask for `dimensions`.
    """

    def __init__(self, api_key: str = "sk-local-test", embedding_dim: int = EMBEDDING_DIM) -> None:
        self.api_key = api_key
        self.embedding_dim = embedding_dim
        self.chat_requests: list[dict[str, Any]] = []
        self.chat_replies: list[str] = []
        self.embedding_requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> OpenAIServer:
        if self._httpd is not None:
            return self
        handler = type("Handler", (_Handler,), {"app": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="openai-server", daemon=True)  # a short poll: stop() in 50 ms
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("The server is not running: use `with OpenAIServer() as server:` or .start().")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """What to pass as `base_url` to `openai.OpenAI` (or set as OPENAI_BASE_URL)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def client(self, **kwargs: Any) -> Any:
        """A real `openai.OpenAI` client pointed at this server."""
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key=self.api_key, max_retries=0, **kwargs)

    # -- what was asked --------------------------------------------------------------------
    def prompts(self) -> list[str]:
        """Each chat request's messages joined into one text, oldest first."""
        with self._lock:
            requests = list(self.chat_requests)
        return [prompt_text(request) for request in requests]

    def reset(self) -> None:
        with self._lock:
            self.chat_requests.clear()
            self.chat_replies.clear()
            self.embedding_requests.clear()

    # -- the endpoints ---------------------------------------------------------------------
    def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty list of {role, content} objects.")
        if body.get("stream"):
            raise BadRequest("This local server does not stream; call without stream=True.")
        reply = deterministic_reply(messages)
        with self._lock:
            self.chat_requests.append(body)
            self.chat_replies.append(reply)
            number = len(self.chat_requests)
        prompt_tokens = len(prompt_text(body).split())
        return {
            "id": f"chatcmpl-local-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model") or CHAT_MODEL),
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": reply}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(reply.split()),
                      "total_tokens": prompt_tokens + len(reply.split())},
        }

    def embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise BadRequest("'input' must be a string or a non-empty list of strings.")
        dim = body.get("dimensions") or self.embedding_dim
        if not isinstance(dim, int) or dim < 8:
            raise BadRequest(f"'dimensions' must be an int of at least 8, got {dim!r}.")
        with self._lock:
            self.embedding_requests.append(body)
        vectors = HashingEmbedder(dim).embed(texts)
        as_base64 = body.get("encoding_format") == "base64"
        data = [{"object": "embedding", "index": i,
                 "embedding": _base64(row) if as_base64 else [float(x) for x in row]}
                for i, row in enumerate(vectors)]
        tokens = sum(len(t.split()) for t in texts)
        return {"object": "list", "data": data, "model": str(body.get("model") or EMBEDDING_MODEL),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "local"}
                                           for m in (CHAT_MODEL, EMBEDDING_MODEL)]}


class BadRequest(ValueError):
    """A request the real API would refuse with 400; the message goes back to the client."""


def _base64(row: np.ndarray) -> str:
    return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")


def _content_text(content: object) -> str:
    """A message's content as text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def prompt_text(request: dict[str, Any]) -> str:
    """All messages of a chat request as one text (role: content per line)."""
    return "\n".join(f"{m.get('role', '?')}: {_content_text(m.get('content'))}"
                     for m in request.get("messages", []) if isinstance(m, dict))


def deterministic_reply(messages: list[Any]) -> str:
    """The same messages always get the same reply, which shows what the model was given."""
    texts = [(m.get("role"), _content_text(m.get("content"))) for m in messages if isinstance(m, dict)]
    question = next((t for role, t in reversed(texts) if role == "user"), "")
    context = " ".join(t for role, t in texts if not (role == "user" and t == question))
    digest = hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:8]
    quote = " ".join(context.split()[:QUOTE_WORDS])
    return f"[local model {digest}] You asked: {question.strip()!r}. From the context: {quote}"


class _Handler(BaseHTTPRequestHandler):
    app: OpenAIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet: tests read records
        return

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.rstrip("/") == "/v1/models":
            self._send(HTTPStatus.OK, self.app.models())
        else:
            self._error(HTTPStatus.NOT_FOUND, f"No route GET {self.path}.")

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        routes = {"/v1/chat/completions": self.app.chat_completion, "/v1/embeddings": self.app.embeddings}
        route = routes.get(self.path.split("?")[0].rstrip("/"))
        body = self._body()
        if route is None:
            self._error(HTTPStatus.NOT_FOUND, f"No route POST {self.path}.")
        elif not self._authorised():
            self._error(HTTPStatus.UNAUTHORIZED, "Incorrect API key provided.", "invalid_request_error")
        elif not isinstance(body, dict):
            self._error(HTTPStatus.BAD_REQUEST, "The request body must be a JSON object.")
        else:
            try:
                self._send(HTTPStatus.OK, route(body))
            except BadRequest as exc:
                self._error(HTTPStatus.BAD_REQUEST, str(exc))

    def _authorised(self) -> bool:
        return not self.app.api_key or self.headers.get("Authorization") == f"Bearer {self.app.api_key}"

    def _body(self) -> object:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"null")
        except ValueError:
            return None

    def _error(self, status: HTTPStatus, message: str, kind: str = "invalid_request_error") -> None:
        self._send(status, {"error": {"message": message, "type": kind, "param": None, "code": None}})

    def _send(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
