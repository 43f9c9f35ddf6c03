"""What every scripted model server shares: the script, the turn plan, the ledger, the HTTP loop.

A scripted model server stands in for a model provider's API on 127.0.0.1 and nothing else. The
real agent CLI talks to it exactly as it talks to the provider; the server answers by a script
that the test put in the task text, as a marker the server finds in the conversation::

    [[model-script:{"write": ["notes.txt", "hello"], "commit": "add notes", "final": "done"}]]

Turns are counted from the conversation itself (how many tool results it already holds), so a
retried request gets the same answer as the first try and the server keeps no per-client state:

* turn 0: a file-writing tool call (``write``: path, content), when the script has one;
* next: a shell tool call, ``git add -A && git commit -qm MESSAGE`` (``commit``), when given;
* next: a further shell tool call (``shell``: a command, e.g. ``touch ready && sleep 60``);
* then: the final text (``final``; may carry ``<stuck>…</stuck>`` or ``<promise>COMPLETE…``).

Other keys: ``delay`` (seconds before each answer starts), ``fail`` (an HTTP status such as 401
or 500 for every model call, with the provider's error body), ``malformed`` (a stream that
breaks off with invalid data), ``usage`` (per turn ``[input, output, cache_read, cache_write]``;
the last entry repeats; default ``DEFAULT_USAGE``).

Every request is kept (``requests``), and every answer that reported usage is an entry of the
``ledger``, which the tests compare with what cub recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

MARKER = re.compile(r"\[\[model-script:(\{.*?\})\]\]", re.DOTALL)
DEFAULT_USAGE: tuple[int, int, int, int] = (1200, 80, 300, 40)


def _marker_json(found: str) -> dict[str, Any] | None:
    """A marker's script; also when the CLI escaped the prompt's quotes (OpenCode 1.18 wraps a
    message argument in quotes and backslash-escapes every ``"`` in it); None for text that
    only looks like a marker."""
    for text in (found, f'"{found}"'):
        with contextlib.suppress(ValueError):
            value = json.loads(text, strict=False)
            if isinstance(value, str):
                value = json.loads(value, strict=False)
            if isinstance(value, dict):
                return value
    return None


def script_marker(**script: Any) -> str:
    """The marker to put in a task's text for the server to follow ``script``. ``<`` is
    written as a JSON escape: cub neutralises signal tags in a task's text (an agent echoing
    its task must not signal), and the model's own ``<stuck>`` must reach it whole."""
    text = json.dumps(script, separators=(",", ":")).replace("<", "\\u003c")
    return f"[[model-script:{text}]]"


@dataclass(frozen=True)
class TurnUsage:
    input: int
    output: int
    cache_read: int = 0
    cache_write: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write


@dataclass(frozen=True)
class ToolCall:
    kind: str  # "write" or "shell"
    path: str = ""
    content: str = ""
    command: str = ""


@dataclass(frozen=True)
class FinalText:
    text: str


Action = ToolCall | FinalText


@dataclass(frozen=True)
class Script:
    write: tuple[str, str] | None = None
    commit: str | None = None
    shell: str | None = None
    final: str = "Done."
    delay: float = 0.0
    fail: int | None = None
    malformed: bool = False
    usage: tuple[tuple[int, int, int, int], ...] = (DEFAULT_USAGE,)

    @classmethod
    def find(cls, text: str) -> Script | None:
        """The script in ``text`` (the last marker wins: a prompt may quote an older one)."""
        raw = next((r for r in map(_marker_json, reversed(MARKER.findall(text))) if r), None)
        if raw is None:
            return None
        write = raw.get("write")
        usage = raw.get("usage")
        return cls(
            write=(str(write[0]), str(write[1])) if write else None,
            commit=raw.get("commit"),
            shell=raw.get("shell"),
            final=raw.get("final", "Done."),
            delay=float(raw.get("delay", 0.0)),
            fail=raw.get("fail"),
            malformed=bool(raw.get("malformed", False)),
            usage=tuple(tuple(u) for u in usage) if usage else (DEFAULT_USAGE,),  # type: ignore[misc]
        )

    def steps(self) -> list[Action]:
        steps: list[Action] = []
        if self.write is not None:
            steps.append(ToolCall("write", path=self.write[0], content=self.write[1]))
        if self.commit is not None:
            message = self.commit.replace("'", "")
            steps.append(ToolCall("shell", command=f"git add -A && git commit -qm '{message}'"))
        if self.shell is not None:
            steps.append(ToolCall("shell", command=self.shell))
        steps.append(FinalText(self.final))
        return steps

    def action(self, turn: int) -> Action:
        steps = self.steps()
        return steps[min(turn, len(steps) - 1)]

    def usage_for(self, turn: int) -> TurnUsage:
        return TurnUsage(*self.usage[min(turn, len(self.usage) - 1)])


@dataclass(frozen=True)
class LedgerEntry:
    """One answer that reported usage to the agent."""

    path: str
    model: str | None
    turn: int
    kind: str  # "tool", "final", or a server's own kind ("title", "routing", …)
    usage: TurnUsage


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # decoded JSON, or the raw text


@dataclass
class ScriptedModelServer:
    """The HTTP server and its bookkeeping; a subclass answers its API's requests.

    Use as a context manager; ``url`` is ``http://127.0.0.1:PORT``.
    """

    name: ClassVar[str] = "model"
    requests: list[RecordedRequest] = field(default_factory=list)
    ledger: list[LedgerEntry] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _httpd: ThreadingHTTPServer | None = None

    # ----------------------------------------------------------------- for subclasses

    def handle(self, request: RecordedRequest, reply: Reply) -> None:
        """Answer one request (the subclass's API)."""
        raise NotImplementedError

    def record_usage(
        self, request: RecordedRequest, model: str | None, turn: int, kind: str, usage: TurnUsage
    ) -> None:
        with self._lock:
            self.ledger.append(LedgerEntry(request.path, model, turn, kind, usage))

    # ----------------------------------------------------------------- for tests

    @property
    def url(self) -> str:
        assert self._httpd is not None, "the server is not running"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def usage_total(self, kinds: Sequence[str] = ("tool", "final")) -> TurnUsage:
        """The sum of the ledger's entries of these kinds."""
        entries = [e.usage for e in self.ledger if e.kind in kinds]
        return TurnUsage(
            sum(u.input for u in entries),
            sum(u.output for u in entries),
            sum(u.cache_read for u in entries),
            sum(u.cache_write for u in entries),
        )

    def model_calls(self) -> list[RecordedRequest]:
        """The requests that asked the model for an answer (not probes)."""
        return [r for r in self.requests if r.method == "POST"]

    def __enter__(self) -> ScriptedModelServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                request = RecordedRequest(self.command, self.path, dict(self.headers), body)
                with server._lock:
                    server.requests.append(request)
                reply = Reply(self)
                # The agent may hang up at any moment (it was stopped): nothing to answer then.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    server.handle(request, reply)
                    reply.finish()

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _serve

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()


class Reply:
    """Ways to answer one request: a JSON body, an error, or a server-sent event stream."""

    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        self._handler = handler
        self._streaming = False
        self._done = False

    def json(self, body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self._send_head(status, "application/json", len(data), headers)
        self._handler.wfile.write(data)
        self._done = True

    def empty(self, status: int = 200) -> None:
        self._send_head(status, "text/plain", 0)
        self._done = True

    def start_stream(self, content_type: str = "text/event-stream") -> None:
        """Begin a chunked event stream; then ``event(...)`` per event, ``end_stream()``."""
        handler = self._handler
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        self._streaming = True

    def raw(self, text: str) -> None:
        """Write ``text`` as one chunk of the stream."""
        data = text.encode()
        self._handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self._handler.wfile.flush()

    def event(self, data: Any, name: str | None = None) -> None:
        """One server-sent event: ``event: NAME`` (if given) and ``data: JSON``."""
        head = f"event: {name}\n" if name else ""
        self.raw(f"{head}data: {json.dumps(data)}\n\n")

    def end_stream(self) -> None:
        if self._streaming and not self._done:
            self._handler.wfile.write(b"0\r\n\r\n")
            self._handler.wfile.flush()
        self._done = True

    def finish(self) -> None:
        if self._streaming:
            self.end_stream()
        elif not self._done:
            self.empty(404)

    def _send_head(
        self, status: int, content_type: str, length: int, headers: Mapping[str, str] | None = None
    ) -> None:
        handler = self._handler
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(length))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()


def pause(seconds: float) -> None:
    """The script's per-turn delay (sleeps in small steps, so a stopped server does not wait)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(0.05, left))


def texts_in(value: Any) -> Iterator[str]:
    """Every string anywhere inside a decoded JSON value (to find the script marker)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from texts_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from texts_in(item)


def find_script(body: Any) -> Script | None:
    return Script.find("\n".join(texts_in(body)))


# ------------------------------------------------------------------------- the rigs

AGENTS_BIN = Path(__file__).resolve().parents[3] / "build" / "agents" / "node_modules" / ".bin"
"""Where `tools/setup --agents` installs the real agent CLIs."""


def agent_program(name: str) -> Path:
    """The installed real CLI ``name``; a clear failure when it is not installed."""
    program = AGENTS_BIN / name
    if not program.exists():
        raise RuntimeError(f"{program} is missing: run `tools/setup --agents` first")
    return program


@dataclass
class CliRig:
    """One real agent CLI wired to its scripted model server, ready for `cub run -H NAME`.

    ``env`` is what the cub process needs besides the test's own environment: PATH with the
    CLI first, the server's base URL, a dummy key, the CLI's private config and data
    directories (inside the test's temporary directory, never the real home). ``config`` is
    merged into the project's .cub/config.json (e.g. ``harness.env``, ``harness.extra_args``).
    """

    harness: str  # cub's harness name: claude, codex, gemini, opencode
    server: ScriptedModelServer
    env: dict[str, str]
    config: dict[str, Any]
    # Ledger kinds whose usage the CLI reports in its own output (cub can count only those).
    counted_kinds: tuple[str, ...] = ("tool", "final")
    # Whether the CLI's output carries usage before the attempt ends (a token budget can stop
    # it mid-task).
    usage_mid_task: bool = False


def path_with(program_dir: Path) -> str:
    """PATH with ``program_dir`` first, then this machine's usual directories (node, git)."""
    return os.pathsep.join([str(program_dir), os.environ.get("PATH", "/usr/bin:/bin")])
