"""A small OpenAI-compatible chat-completions server for tests, with scripted failures.

It listens on 127.0.0.1 (an OS-chosen port) in a background thread and serves
`POST /v1/chat/completions` in the OpenAI wire format, including `logprobs.content[0].top_logprobs`
and `usage`. Its answers are a deterministic function of the last user message, so a test can say
what label every question must get without asking the server.

Failures are scripted: `server.script` is a list of actions consumed one per request (then
`server.default` applies). Actions:
    "ok"           a normal answer with logprobs
    "no_logprobs"  a normal answer whose `logprobs` field is null
    "maybe"        the answer "Maybe", with Yes and No (odds p : 1-p) further down its top log-probs
    "off_topic"    the answer "The", with no Yes or No among its top log-probs
    "429"          HTTP 429 with `Retry-After: 0`
    "500"          HTTP 500
    "malformed"    HTTP 200 whose body is not JSON
    "empty"        HTTP 200 with JSON that is not a chat completion (no choices)
    "401"          HTTP 401 (as if the API key were wrong)
    "400"          HTTP 400 (a request the server rejects)
    "hang"         never answers (until the server stops); used to freeze a client before a kill
`hang_after=N` makes every request after the N-th hang, whatever the script says.

A request with `response_format` (the judge's constrained second try) gets the JSON answer
'{"answer": "Yes"}' token by token, with P(yes) = p at the answer token only (the first token carries
a misleading Yes/No split, so reading the wrong position is caught); "no_logprobs" and "400" apply to
it as to any request.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def expected_p_yes(user_text: str) -> float:
    """The P(yes) the server gives to a prompt: a deterministic value in [0.05, 0.95], never 0.5."""
    h = hashlib.sha256(user_text.encode("utf-8")).digest()
    p = 0.05 + 0.9 * h[0] / 255
    return 0.45 if abs(p - 0.5) < 1e-9 else p


def _top(token: str, p: float) -> dict:
    return {"token": token, "logprob": math.log(p), "bytes": list(token.encode("utf-8"))}


class FakeOpenAIServer:
    """Context manager: `with FakeOpenAIServer() as server: OpenAIJudge(base_url=server.base_url, ...)`."""

    def __init__(self, api_key: str | None = None, default: str = "ok", hang_after: int | None = None):
        self.api_key = api_key  # when set, requests with another bearer token get 401
        self.default = default
        self.hang_after = hang_after
        self.script: list[str] = []
        self.requests: list[dict] = []  # one entry per request: action, user text, auth header
        self._lock = threading.Lock()
        self._release = threading.Event()
        self.hanging = threading.Event()  # set when a request starts hanging
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def count(self, action: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if action is None or r["action"] == action)

    def __enter__(self) -> "FakeOpenAIServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- request handling ------------------------------------------------------------------------

    def _next_action(self, auth: str, user_text: str, constrained: bool = False) -> str:
        with self._lock:
            if self.api_key is not None and auth != f"Bearer {self.api_key}":
                action = "401"
            elif self.hang_after is not None and len(self.requests) >= self.hang_after:
                action = "hang"
            elif self.script:
                action = self.script.pop(0)
            else:
                action = self.default
            self.requests.append({"action": action, "user": user_text, "auth": auth, "constrained": constrained})
            return action

    def _completion(self, body: dict, action: str) -> dict:
        user_text = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
        p = expected_p_yes(user_text)
        answer = "Yes" if p > 0.5 else "No"
        n_top = int(body.get("top_logprobs") or 5)
        if body.get("response_format"):
            content = json.dumps({"answer": answer})
            steps = [('{"', [_top('{"', 0.9), _top("Yes", 0.09), _top("No", 0.01)]),
                     ("answer", [_top("answer", 1.0)]), ('": "', [_top('": "', 1.0)]),
                     (answer, [_top("Yes", 0.7 * p), _top("No", 0.7 * (1 - p)), _top("The", 0.3)]),
                     ('"}', [_top('"}', 1.0)])]
        elif action == "maybe":
            content = "Maybe"
            steps = [(content, [_top("Maybe", 0.8), _top("Yes", 0.1 * p), _top("No", 0.1 * (1 - p))])]
        elif action == "off_topic":
            content = "The"
            steps = [(content, [_top("The", 0.6), _top("###", 0.2), _top("```", 0.1), _top("I", 0.1)])]
        else:
            content = answer
            # Yes/No mass split over case and space variants, as real tokenizers do.
            steps = [(content, [_top("Yes", 0.8 * p), _top("No", 0.8 * (1 - p)), _top(" yes", 0.1 * p),
                                _top(" No", 0.1 * (1 - p)), _top("Maybe", 0.1)])]
        logprobs = None
        if action != "no_logprobs" and body.get("logprobs"):
            positions = []
            for token, top in steps:
                top = sorted(top, key=lambda t: -t["logprob"])[:n_top]
                chosen = next((t for t in top if t["token"] == token), top[0])
                positions.append({**chosen, "top_logprobs": top})
            logprobs = {"content": positions, "refusal": None}
        prompt_tokens = len(user_text.split())
        return {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "logprobs": logprobs, "finish_reason": "length"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(steps),
                      "total_tokens": prompt_tokens + len(steps)},
        }

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if not self.path.endswith("/chat/completions"):
                    self._send(404, b'{"error": {"message": "not found"}}')
                    return
                user_text = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
                action = server._next_action(self.headers.get("Authorization", ""), user_text,
                                             bool(body.get("response_format")))
                if action == "hang":
                    server.hanging.set()
                    server._release.wait(60)
                    self.close_connection = True
                    return
                if action == "429":
                    err = {"error": {"message": "Rate limit reached", "type": "rate_limit"}}
                    self._send(429, json.dumps(err).encode(), {"Retry-After": "0"})
                elif action == "500":
                    self._send(500, b'{"error": {"message": "internal error", "type": "server_error"}}')
                elif action == "401":
                    err = {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                     "code": "invalid_api_key"}}
                    self._send(401, json.dumps(err).encode())
                elif action == "400":
                    self._send(400, b'{"error": {"message": "bad request", "type": "invalid_request_error"}}')
                elif action == "empty":
                    self._send(200, b'{"object": "chat.completion"}')
                elif action == "malformed":
                    self._send(200, b'{"id": "chatcmpl-fake", "choices": [{"mess')
                else:
                    self._send(200, json.dumps(server._completion(body, action)).encode())

        return Handler
