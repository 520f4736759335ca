"""Helper (no tests): a real OpenAI-compatible chat-completions server on 127.0.0.1 with scripted replies.

Replies are taken from ``script`` in order; when it runs out, a valid reply is composed from the
request (the rule ids listed in the system prompt), so any number of calls can be served. ``port``
serves on a given port (to bring an endpoint back at the same URL after stopping it); 0 picks a free one.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI, Request


def _auto_reply(messages: list[dict]) -> str:
    system = messages[0]["content"]
    user = messages[1]["content"] if len(messages) > 1 else ""
    harmful = "HARMFUL" in user
    ids = re.findall(r"^- ([^:\n]+):", system, re.MULTILINE)
    if '"labels"' in system:
        n = len(re.findall(r"^\d+\. ", user, re.MULTILINE))
        return json.dumps({"labels": ["RETHINK"] * n})  # over-uses RETHINK, as the R2D paper saw
    if '"rewrite"' in system:
        original = user.rsplit("Original:", 1)[1].strip()
        return json.dumps({"rewrite": f"Scripted server rewrite of: {original}"})
    if '"steps"' in system:
        steps = [{"text": "Server step: reading the request.", "pivot": "RETHINK"},
                 {"text": "Server step: judging it.", "pivot": "UNSAFE" if harmful else "SAFE"}]
        return json.dumps({"steps": steps, "answer": f"Server refusal under {ids[0]}." if harmful else None,
                           "categories": [ids[0]] if harmful else []})
    verdicts = [{"category": c, "violated": harmful and i == 0, "reason": "server reason" if harmful and i == 0 else ""}
                for i, c in enumerate(ids)]
    return json.dumps({"intent": "Server intent summary.", "verdicts": verdicts,
                       "refusal": f"Server refusal naming {ids[0]}." if harmful else None})


class ScriptedServer:
    def __init__(self, script: list[str] | None = None, *, port: int = 0):
        self.script = list(script or [])
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(req: Request) -> dict:
            body = await req.json()
            with self._lock:
                self.requests.append(body)
                content = self.script.pop(0) if self.script else _auto_reply(body["messages"])
            return {"id": "x", "object": "chat.completion", "model": body["model"], "created": 0,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}]}

        self.port = port
        if not port:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            sock.close()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
