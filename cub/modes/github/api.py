"""A small GitHub REST API client: the four calls a `--gh-issue` run makes, over urllib.

Every failure is a `GitHubError` subclass whose message is one line a user can act on (which
call, what GitHub said, what to do about it); nothing here lets a traceback out.

Base URL: ``GITHUB_API_URL``, else config ``github.api_url``, else the public API. Token:
``GH_TOKEN``, then ``GITHUB_TOKEN``, then ``gh auth token`` when the gh program is installed;
without one the client is anonymous, which is enough for public repositories.
"""

from __future__ import annotations

import http.client
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import Message
from typing import Any

import msgspec

from cub import __version__
from cub.errors import CubError

DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
REQUEST_TIMEOUT_S = 20.0
GH_TOKEN_TIMEOUT_S = 10.0
# Pages of comments followed at most (100 comments a page).
MAX_COMMENT_PAGES = 10
_MESSAGE_CHARS = 200


# ------------------------------------------------------------------------------------ records


class User(msgspec.Struct, kw_only=True):
    login: str = ""


class Label(msgspec.Struct, kw_only=True):
    name: str = ""


class Issue(msgspec.Struct, kw_only=True):
    """The fields of `GET /repos/{owner}/{repo}/issues/{n}` cub uses."""

    number: int
    title: str
    body: str | None = None
    state: str = "open"
    html_url: str = ""
    user: User | None = None
    # The API documents each label as an object or, in some payloads, a bare name.
    labels: list[Label | str] = msgspec.field(default_factory=list)
    # Present (an object) only when the number is a pull request.
    pull_request: dict[str, Any] | None = None

    @property
    def label_names(self) -> list[str]:
        return [label if isinstance(label, str) else label.name for label in self.labels]

    @property
    def is_pull_request(self) -> bool:
        return self.pull_request is not None


class Comment(msgspec.Struct, kw_only=True):
    id: int = 0
    body: str | None = None
    user: User | None = None
    created_at: str = ""
    html_url: str = ""


class ApiCall(msgspec.Struct, kw_only=True):
    """One request and how it went, for the run's journal (never holds the token)."""

    method: str
    path: str
    status: int | None = None
    ok: bool = False
    error: str | None = None


# ------------------------------------------------------------------------------------- errors


class GitHubError(CubError):
    """A GitHub API call failed; ``str(exc)`` is one line."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFound(GitHubError):
    """404/410: no such repository or issue (or no access to see it)."""


class AuthFailed(GitHubError):
    """401/403: the token is missing, wrong, or lacks access."""


class RateLimited(GitHubError):
    """The API's rate limit is spent."""


class NetworkError(GitHubError):
    """No answer: DNS, connection or timeout."""


class ServerError(GitHubError):
    """5xx: GitHub's side failed."""


class ApiError(GitHubError):
    """Any other unexpected answer (a 4xx cub does not expect, a body that is not JSON)."""


# ------------------------------------------------------------------------------ configuration


def api_base_url(env: Mapping[str, str], configured: str | None = None) -> str:
    """``GITHUB_API_URL``, else ``github.api_url``, else the public API; no trailing slash."""
    url = (env.get("GITHUB_API_URL") or "").strip() or (configured or "").strip()
    return (url or DEFAULT_API_URL).rstrip("/")


def resolve_token(env: Mapping[str, str], api_url: str = DEFAULT_API_URL) -> str | None:
    """``GH_TOKEN``, then ``GITHUB_TOKEN``, then ``gh auth token``; None means anonymous."""
    for name in ("GH_TOKEN", "GITHUB_TOKEN"):
        value = (env.get(name) or "").strip()
        if value:
            return value
    return _gh_auth_token(env, api_url)


def _gh_auth_token(env: Mapping[str, str], api_url: str) -> str | None:
    program = shutil.which("gh", path=env.get("PATH"))
    if program is None:
        return None
    argv = [program, "auth", "token"]
    host = urllib.parse.urlsplit(api_url).hostname or ""
    if host and host != "api.github.com":
        argv += ["--hostname", host]  # GitHub Enterprise: the token gh holds for that host
    try:
        out = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=GH_TOKEN_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            env=dict(env),
        )
    except (OSError, subprocess.SubprocessError):
        return None
    token = out.stdout.strip() if out.returncode == 0 else ""
    return token.splitlines()[0].strip() if token else None


_REMOTE_PATTERNS = (
    # https://github.com/OWNER/NAME(.git), also with user@ and a port
    re.compile(r"^(?:https?|git)://(?:[^@/]+@)?(?P<host>[^/:]+)(?::\d+)?/(?P<path>.+)$"),
    # ssh://git@github.com(:port)/OWNER/NAME(.git)
    re.compile(r"^ssh://(?:[^@/]+@)?(?P<host>[^/:]+)(?::\d+)?/(?P<path>.+)$"),
    # git@github.com:OWNER/NAME(.git)
    re.compile(r"^(?:[^@/]+@)?(?P<host>[^/:]+):(?!/)(?P<path>.+)$"),
)
_REPO_PART = re.compile(r"[A-Za-z0-9_.-]+")


def parse_remote_url(url: str) -> tuple[str, str, str] | None:
    """(host, owner, name) of a remote URL in any of git's usual forms, or None."""
    url = url.strip()
    for pattern in _REMOTE_PATTERNS:
        match = pattern.match(url)
        if match is None:
            continue
        parts = match.group("path").strip("/").split("/")
        if len(parts) != 2:
            return None
        owner, name = parts[0], parts[1].removesuffix(".git")
        if not (_REPO_PART.fullmatch(owner) and _REPO_PART.fullmatch(name)):
            return None
        return match.group("host").lower(), owner, name
    return None


def _one_line(text: str, limit: int = _MESSAGE_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------------------- client


class GitHubClient:
    def __init__(
        self, api_url: str, token: str | None, *, timeout: float = REQUEST_TIMEOUT_S
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.calls: list[ApiCall] = []

    # -- the calls cub makes ------------------------------------------------------------------

    def get_issue(self, owner: str, repo: str, number: int) -> Issue:
        path = f"/repos/{_q(owner)}/{_q(repo)}/issues/{number}"
        return self._decode(self._request("GET", path)[0], Issue, "GET", path)

    def list_comments(
        self, owner: str, repo: str, number: int, *, max_pages: int = MAX_COMMENT_PAGES
    ) -> list[Comment]:
        """The issue's comments, oldest first (following pagination up to ``max_pages``)."""
        path = f"/repos/{_q(owner)}/{_q(repo)}/issues/{number}/comments?per_page=100"
        comments: list[Comment] = []
        url: str | None = path
        pages = 0
        while url is not None and pages < max_pages:
            body, headers = self._request("GET", url)
            comments += self._decode(body, list[Comment], "GET", url)
            url = self._next_page(headers.get("Link"))
            pages += 1
        return comments

    def create_comment(self, owner: str, repo: str, number: int, body: str) -> Comment:
        path = f"/repos/{_q(owner)}/{_q(repo)}/issues/{number}/comments"
        payload = self._request("POST", path, {"body": body})[0]
        return self._decode(payload, Comment, "POST", path)

    def close_issue(self, owner: str, repo: str, number: int) -> Issue:
        path = f"/repos/{_q(owner)}/{_q(repo)}/issues/{number}"
        payload = self._request("PATCH", path, {"state": "closed"})[0]
        return self._decode(payload, Issue, "PATCH", path)

    # -- plumbing -----------------------------------------------------------------------------

    def headers(self, *, json_body: bool = False) -> dict[str, str]:
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": f"cub/{__version__}",
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if json_body:
            headers["Content-Type"] = "application/json"
        return headers

    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return self.api_url + path_or_url

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[bytes, Message]:
        call = ApiCall(method=method, path=_display_path(self.api_url, path))
        self.calls.append(call)
        data = msgspec.json.encode(body) if body is not None else None
        request = urllib.request.Request(
            self._url(path),
            data=data,
            method=method,
            headers=self.headers(json_body=data is not None),
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
                call.status = response.status
                headers = response.headers
        except urllib.error.HTTPError as exc:
            call.status = exc.code
            error: GitHubError = self._http_error(method, call.path, exc)
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            error = NetworkError(
                f"cannot reach the GitHub API at {self.api_url} ({method} {call.path}): "
                f"{_network_reason(exc, self.timeout)}"
            )
        else:
            call.ok = True
            return payload, headers
        call.error = str(error)
        raise error

    def _http_error(self, method: str, path: str, exc: urllib.error.HTTPError) -> GitHubError:
        status = exc.code
        headers = exc.headers or Message()
        try:
            said = _github_message(exc.read())
        except Exception:  # the body of an error answer is a nicety, never a second failure
            said = ""
        what = f"{method} {path}"
        detail = f"HTTP {status}" + (f": {said}" if said else "")
        if status in (403, 429) and headers.get("X-RateLimit-Remaining") == "0":
            reset = _reset_time(headers.get("X-RateLimit-Reset"))
            hint = "" if self.token else "; set GH_TOKEN for a higher limit"
            return RateLimited(
                f"GitHub API rate limit exceeded ({detail}) for {what}; it resets {reset}{hint}",
                status=status,
            )
        if status == 429 or (status == 403 and headers.get("Retry-After")):
            after = headers.get("Retry-After")
            when = f"retry after {after}s" if after else "try again later"
            return RateLimited(
                f"GitHub API rate limit exceeded ({detail}) for {what}; {when}", status=status
            )
        if status == 401:
            fix = (
                "set GH_TOKEN (or GITHUB_TOKEN) to a valid token, or run `gh auth login`"
                if self.token
                else "authentication is required: set GH_TOKEN (or GITHUB_TOKEN) to a token"
            )
            return AuthFailed(
                f"GitHub rejected the request ({detail}) for {what}; {fix}", status=401
            )
        if status == 403:
            fix = (
                "check that the token in GH_TOKEN (or GITHUB_TOKEN) may access this repository"
                if self.token
                else "set GH_TOKEN (or GITHUB_TOKEN) to a token with access"
            )
            return AuthFailed(f"GitHub refused access ({detail}) for {what}; {fix}", status=403)
        if status in (404, 410):
            return NotFound(f"not found on GitHub ({detail}) for {what}", status=status)
        if status >= 500:
            return ServerError(
                f"the GitHub API at {self.api_url} failed ({detail}) for {what}; try again later",
                status=status,
            )
        return ApiError(f"GitHub answered {detail} for {what}", status=status)

    def _decode(self, payload: bytes, kind: Any, method: str, path: str) -> Any:
        try:
            return msgspec.json.decode(payload, type=kind)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            message = (
                f"unexpected answer from the GitHub API at {self.api_url} for {method} "
                f"{_display_path(self.api_url, path)}: {_one_line(str(exc))}"
            )
            if self.calls:
                self.calls[-1].ok = False
                self.calls[-1].error = message
            raise ApiError(message) from None

    def _next_page(self, link: str | None) -> str | None:
        """The ``rel="next"`` URL of a Link header, if it stays on this API."""
        if not link:
            return None
        for part in link.split(","):
            match = re.match(r'\s*<([^>]+)>\s*;.*\brel="?next"?', part)
            if match and match.group(1).startswith(self.api_url + "/"):
                return match.group(1)
        return None


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _display_path(api_url: str, path: str) -> str:
    """The request path without the base URL or query string, for messages and the journal."""
    if path.startswith(api_url):
        path = path[len(api_url) :]
    return path.split("?", 1)[0]


def _github_message(body: bytes) -> str:
    """GitHub's own ``message`` from an error answer, on one line."""
    if not body:
        return ""
    try:
        data = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return _one_line(body.decode("utf-8", "replace"), 120)
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return _one_line(data["message"], 120)
    return ""


def _reset_time(value: str | None) -> str:
    """``at 2025-01-31 09:30:00 UTC (in 12 min)`` from an ``X-RateLimit-Reset`` epoch."""
    try:
        reset = datetime.fromtimestamp(int(value or ""), UTC)
    except (ValueError, OverflowError, OSError):
        return "later (GitHub did not say when)"
    seconds = max(0, int((reset - datetime.now(UTC)).total_seconds()))
    wait = f"{seconds // 60} min" if seconds >= 60 else f"{seconds}s"
    return f"at {reset.strftime('%Y-%m-%d %H:%M:%S')} UTC (in {wait})"


def _network_reason(exc: BaseException, timeout: float) -> str:
    reason: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host name ({_one_line(str(reason.strerror or reason), 80)})"
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g}s"
    if isinstance(reason, ConnectionResetError):
        return "the connection was reset"
    if isinstance(reason, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    return _one_line(str(reason) or type(reason).__name__, 120)
