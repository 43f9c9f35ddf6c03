"""`cub run --gh-issue N`, through the real `cub` process, against a local GitHub API.

The server below speaks the four endpoints cub uses from an in-memory set of issues, records
every request, and can be told to fail (401, 404, rate limit, 500) or be gone altogether. The
project's origin remote names github.com, but only GITHUB_API_URL is ever contacted.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cub.modes.github.api import (
    AuthFailed,
    Comment,
    GitHubClient,
    Issue,
    NetworkError,
    NotFound,
    RateLimited,
    ServerError,
    User,
    api_base_url,
    parse_remote_url,
    resolve_token,
)
from cub.modes.github.issue import (
    MAX_COMMENTS,
    comment_body,
    issue_prompt,
    recent_comments,
)
from tests.e2e.support import assert_no_traceback, command_harness, stderr_lines
from tests.helpers.agents import sleeping_agent, wait_for_file, write_script
from tests.helpers.cli import (
    make_project,
    read_attempt,
    read_events,
    read_run,
    run_cub,
    run_dir,
    start_cub,
)
from tests.helpers.exit_paths import assert_ending, exit_path
from tests.helpers.git import git

pytestmark = pytest.mark.timeout(60)

TOKEN = "t0ken"
TITLE = "Crash when saving: empty name!"
SLUG = "crash-when-saving-empty-name"
BRANCH = f"fix/issue-7-{SLUG}"


# ------------------------------------------------------------------------ the fake GitHub API


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # names lowercased
    body: Any


@dataclass
class FakeGitHub:
    """Issues keyed by (owner, repo, number); what every request looked like."""

    url: str = ""
    issues: dict[tuple[str, str, int], dict[str, Any]] = field(default_factory=dict)
    comments: dict[tuple[str, str, int], list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    # None, 401, 404, 500 or "rate_limit": how every request (of ``fail_methods``) is answered.
    fail: int | str | None = None
    fail_methods: tuple[str, ...] = ("GET", "POST", "PATCH")
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_issue(
        self,
        number: int = 7,
        *,
        owner: str = "acme",
        repo: str = "widgets",
        title: str = TITLE,
        body: str = "Saving a widget with an empty name raises KeyError.",
        labels: tuple[str, ...] = ("bug", "ui"),
        comments: tuple[tuple[str, str], ...] = (),
        state: str = "open",
        pull_request: bool = False,
    ) -> None:
        issue: dict[str, Any] = {
            "number": number,
            "title": title,
            "body": body,
            "state": state,
            "html_url": f"https://github.com/{owner}/{repo}/issues/{number}",
            "user": {"login": "reporter"},
            "labels": [{"name": name, "color": "ededed"} for name in labels],
            "comments": len(comments),
        }
        if pull_request:
            issue["pull_request"] = {"url": f"https://api.github.com/pulls/{number}"}
        self.issues[(owner, repo, number)] = issue
        self.comments[(owner, repo, number)] = [
            {
                "id": i + 1,
                "body": text,
                "user": {"login": login},
                "created_at": f"2025-01-0{i + 1}T10:00:00Z",
            }
            for i, (login, text) in enumerate(comments)
        ]

    def seen(self, method: str | None = None) -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if method is None or r.method == method]

    def posted_comments(self) -> list[str]:
        return [r.body["body"] for r in self.seen("POST")]

    def respond(self, request: Seen) -> Answer:
        """GitHub's answer to one request (under the lock)."""
        self.requests.append(request)
        if self.fail is not None and request.method in self.fail_methods:
            return _failure(self.fail)
        match = _ROUTE.match(request.path)
        key = (match.group(1), match.group(2), int(match.group(3))) if match else None
        if match is None or key is None or key not in self.issues:
            return 404, {"message": "Not Found"}, {}
        if not match.group(4):
            if request.method == "PATCH":
                self.issues[key].update(request.body)
            return 200, self.issues[key], {}
        if request.method == "GET":
            return 200, self.comments[key], {}
        comment = {"id": 100 + len(self.comments[key]), "body": request.body["body"]}
        self.comments[key].append(comment)
        return 201, comment, {}


# (status, JSON payload, extra headers)
Answer = tuple[int, Any, dict[str, str]]
_ROUTE = re.compile(r"^/repos/([^/]+)/([^/]+)/issues/(\d+)(/comments)?$")


def _failure(how: int | str) -> Answer:
    if how == "rate_limit":
        headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(RESET_AT)}
        return 403, {"message": "API rate limit exceeded for 127.0.0.1."}, headers
    if how == 401:
        return 401, {"message": "Bad credentials"}, {}
    if how == 404:
        return 404, {"message": "Not Found"}, {}
    return int(how), {"message": "Server Error"}, {}


def _handler(api: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            request = Seen(
                self.command,
                self.path.split("?", 1)[0],
                {k.lower(): v for k, v in self.headers.items()},
                json.loads(raw) if raw else None,
            )
            with api.lock:
                status, payload, headers = api.respond(request)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _handle

    return Handler


RESET_AT = int(time.time()) + 1800


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    api = FakeGitHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def closed_port_url() -> str:
    """A URL on which nothing listens: the network is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ------------------------------------------------------------------------------------ helpers


def env_for(url: str, **extra: str) -> dict[str, str]:
    return {
        "GITHUB_API_URL": url,
        "GH_TOKEN": TOKEN,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        **extra,
    }


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = make_project(tmp_path / "proj")
    git(path, "remote", "add", "origin", "https://github.com/acme/widgets.git")
    return path


@pytest.fixture
def fixing_agent(tmp_path: Path) -> Path:
    """Commits a file, as an agent that fixed the issue would."""
    return write_script(
        tmp_path / "fix-agent",
        """
        import subprocess, sys
        sys.stdin.read()
        with open("fix.txt", "w") as f:
            f.write("fixed\\n")
        subprocess.run(["git", "add", "fix.txt"], check=True)
        subprocess.run(["git", "commit", "-q", "-m", "Fix #7: accept empty names"], check=True)
        print("fixed it")
        """,
    )


@pytest.fixture
def failing_agent(tmp_path: Path) -> Path:
    return write_script(
        tmp_path / "fail-agent",
        """
        import sys
        sys.stdin.read()
        print("could not reproduce")
        sys.exit(1)
        """,
    )


def cub_issue(
    project: Path, url: str, agent: Path, *extra: str, number: int = 7, **env: str
) -> subprocess.CompletedProcess[str]:
    return run_cub(
        ["run", "--gh-issue", str(number), *command_harness(agent), *extra],
        project,
        env=env_for(url, **env),
    )


def events_of(project: Path, kind: str) -> list[dict[str, Any]]:
    return [e.data for e in read_events(project) if e.kind == kind]


def branches(project: Path) -> list[str]:
    return git(project, "branch", "--format=%(refname:short)").split()


def short(project: Path, ref: str) -> str:
    return git(project, "rev-parse", "--short", ref)


def assert_identity(project: Path) -> None:
    record = read_run(project)
    assert record.mode == "gh-issue"
    assert record.run_id.startswith("gh-")
    assert record.recorded_by == "machine"


# --------------------------------------------------------------------------------- successes


def test_fixed_issue_gets_a_comment_with_the_commit_range(
    project: Path, github: FakeGitHub, fixing_agent: Path
) -> None:
    github.add_issue(
        comments=(("alice", "Same here on 2.3."), ("bob", "Happens only with an empty name."))
    )
    base = git(project, "rev-parse", "HEAD")
    result = cub_issue(project, github.url, fixing_agent)
    assert_no_traceback(result)
    assert result.returncode == 0, result.stdout + result.stderr

    record = read_run(project)
    assert_identity(project)
    assert (record.state, record.exit_code) == ("completed", 0)
    assert record.branch == BRANCH
    assert record.tasks.attempted == ["issue-7"]
    assert read_attempt(project, "issue-7").outcome == "succeeded"

    # The fix is on its own branch, made from main's HEAD; main itself is untouched.
    assert BRANCH in branches(project)
    assert git(project, "log", "-1", "--format=%s", BRANCH) == "Fix #7: accept empty names"
    assert git(project, "rev-parse", "main") == base
    assert git(project, "rev-parse", f"{BRANCH}~1") == base

    # The comment names the run and the commit range; the issue stays open (not configured).
    commits = f"{short(project, base)}..{short(project, BRANCH)}"
    (body,) = github.posted_comments()
    assert record.run_id in body and commits in body and BRANCH in body
    assert github.seen("PATCH") == []
    assert github.issues[("acme", "widgets", 7)]["state"] == "open"

    # Every request carried the token and GitHub's headers.
    paths = [(r.method, r.path) for r in github.seen()]
    assert paths == [
        ("GET", "/repos/acme/widgets/issues/7"),
        ("GET", "/repos/acme/widgets/issues/7/comments"),
        ("POST", "/repos/acme/widgets/issues/7/comments"),
    ]
    for request in github.seen():
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.headers["accept"] == "application/vnd.github+json"
        assert request.headers["x-github-api-version"] == "2022-11-28"
        assert request.headers["user-agent"].startswith("cub/")

    # The agent saw the issue: title, body, labels, comments with their authors.
    prompt = (run_dir(project) / "tasks" / "issue-7" / "prompt.md").read_text()
    for text in (
        TITLE,
        "acme/widgets#7",
        "Saving a widget with an empty name raises KeyError.",
        "Labels: bug, ui",
        "@alice",
        "Same here on 2.3.",
        "@bob",
        "Happens only with an empty name.",
        "Commit",
    ):
        assert text in prompt, text
    assert prompt.index("Same here on 2.3.") < prompt.index("Happens only with an empty name.")

    # The journal has every API call and its outcome.
    requests = events_of(project, "github_request")
    assert [(e["method"], e["status"], e["ok"]) for e in requests] == [
        ("GET", 200, True),
        ("GET", 200, True),
    ]
    (issue_event,) = events_of(project, "github_issue")
    assert issue_event["title"] == TITLE and issue_event["comments"] == 2
    (comment,) = events_of(project, "github_comment")
    assert comment["ok"] is True and comment["status"] == 201
    assert comment["state"] == "completed" and comment["commits"] == commits
    assert TOKEN not in (run_dir(project) / "events.jsonl").read_text()
    assert TOKEN not in (run_dir(project) / "run.json").read_text()


def test_close_on_success_closes_the_issue_and_branches_off_any_branch(
    tmp_path: Path, github: FakeGitHub, fixing_agent: Path
) -> None:
    project = make_project(tmp_path / "proj", config={"github": {"close_on_success": True}})
    git(project, "remote", "add", "origin", "git@github.com:acme/widgets.git")
    git(project, "switch", "-q", "-c", "develop")
    (project / "dev.txt").write_text("dev\n")
    git(project, "add", "dev.txt")
    git(project, "commit", "-q", "-m", "develop work")
    develop = git(project, "rev-parse", "HEAD")
    github.add_issue()

    result = cub_issue(project, github.url, fixing_agent)
    assert_no_traceback(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert read_run(project).state == "completed"
    # Not on main, yet the run still made its own branch, from develop's HEAD.
    assert read_run(project).branch == BRANCH
    assert git(project, "rev-parse", f"{BRANCH}~1") == develop
    assert git(project, "rev-parse", "develop") == develop

    (patch,) = github.seen("PATCH")
    assert patch.path == "/repos/acme/widgets/issues/7" and patch.body == {"state": "closed"}
    assert patch.headers["authorization"] == f"Bearer {TOKEN}"
    assert github.issues[("acme", "widgets", 7)]["state"] == "closed"
    (close,) = events_of(project, "github_close")
    assert close["ok"] is True and close["status"] == 200


def test_repo_flag_overrides_origin_and_a_closed_issue_is_still_worked_on(
    project: Path, github: FakeGitHub, fixing_agent: Path
) -> None:
    github.add_issue(owner="other", repo="thing", state="closed", labels=())
    result = cub_issue(project, github.url, fixing_agent, "--repo", "other/thing")
    assert_no_traceback(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert read_run(project).state == "completed"
    assert {r.path.split("/issues")[0] for r in github.seen()} == {"/repos/other/thing"}
    prompt = (run_dir(project) / "tasks" / "issue-7" / "prompt.md").read_text()
    assert "other/thing#7" in prompt and "already closed" in prompt
    assert "Labels: (none)" in prompt


def test_worktree_run_reports_the_commits_of_its_branch(
    project: Path, github: FakeGitHub, fixing_agent: Path
) -> None:
    github.add_issue()
    base = git(project, "rev-parse", "HEAD")
    result = cub_issue(project, github.url, fixing_agent, "--worktree")
    assert_no_traceback(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert read_run(project).state == "completed"
    assert git(project, "branch", "--show-current") == "main"
    assert git(project, "rev-parse", f"{BRANCH}~1") == base
    (body,) = github.posted_comments()
    assert f"{short(project, base)}..{short(project, BRANCH)}" in body


def test_a_failing_comment_does_not_change_the_ending(
    project: Path, github: FakeGitHub, fixing_agent: Path
) -> None:
    github.add_issue()
    github.fail, github.fail_methods = 500, ("POST",)
    result = cub_issue(project, github.url, fixing_agent)
    assert_no_traceback(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert read_run(project).state == "completed"
    (comment,) = events_of(project, "github_comment")
    assert comment["ok"] is False and comment["status"] == 500
    assert "HTTP 500" in comment["error"]


# ---------------------------------------------------------------------------------- failures


def test_agent_failure_comments_the_state_and_reason(
    project: Path, github: FakeGitHub, failing_agent: Path
) -> None:
    github.add_issue()
    result = cub_issue(project, github.url, failing_agent)
    assert_no_traceback(result)
    assert result.returncode == 1, result.stdout + result.stderr
    record = read_run(project)
    assert_identity(project)
    assert (record.state, record.reason_code) == ("failed", "task_failed")
    assert read_attempt(project, "issue-7").outcome == "failed"
    (body,) = github.posted_comments()
    assert record.run_id in body and "failed" in body and "task_failed" in body
    assert record.reason in body
    assert github.seen("PATCH") == []
    (comment,) = events_of(project, "github_comment")
    assert comment["ok"] is True and comment["state"] == "failed"


def test_sigint_ends_interrupted_and_comments(
    project: Path, github: FakeGitHub, tmp_path: Path
) -> None:
    github.add_issue()
    ready = tmp_path / "agent-ready"
    agent = sleeping_agent(tmp_path / "sleep-agent", ready)
    proc = start_cub(
        ["run", "--gh-issue", "7", *command_harness(agent), "--grace", "2s"],
        project,
        env=env_for(github.url),
    )
    try:
        wait_for_file(ready, timeout=20)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err
    record = read_run(project)
    assert_identity(project)
    assert (record.state, record.reason_code) == ("interrupted", "sigint")
    (body,) = github.posted_comments()
    assert record.run_id in body and "interrupted" in body and "sigint" in body
    (comment,) = events_of(project, "github_comment")
    assert comment["ok"] is True and comment["state"] == "interrupted"


@exit_path("reject", "validating", "issue_not_found")
def test_missing_issue_is_rejected_in_one_line(
    project: Path, github: FakeGitHub, fixing_agent: Path
) -> None:
    result = cub_issue(project, github.url, fixing_agent, number=404)
    assert_no_traceback(result)
    assert result.returncode == 2
    (line,) = stderr_lines(result)
    assert "acme/widgets#404" in line and github.url in line
    record = read_run(project)
    assert_identity(project)
    assert (record.state, record.reason_code) == ("validation_rejected", "issue_not_found")
    assert_ending(project, result.returncode, "reject", "validating", "issue_not_found")
    assert read_events(project)[-1].state_to == "validation_rejected"
    assert github.seen("POST") == []
    assert not any(b.startswith("fix/") for b in branches(project))


def test_pull_request_number_is_rejected(
    project: Path, github: FakeGitHub, fixing_agent: Path
) -> None:
    github.add_issue(pull_request=True)
    result = cub_issue(project, github.url, fixing_agent)
    assert_no_traceback(result)
    assert result.returncode == 2
    (line,) = stderr_lines(result)
    assert "pull request" in line
    record = read_run(project)
    assert (record.state, record.reason_code) == ("validation_rejected", "issue_not_found")
    assert github.seen("POST") == []


@pytest.mark.parametrize(
    ("fail", "words"),
    [
        (401, ["HTTP 401", "Bad credentials", "GH_TOKEN"]),
        (
            "rate_limit",
            [
                "rate limit",
                "resets at "
                + datetime.fromtimestamp(RESET_AT, UTC).strftime("%Y-%m-%d %H:%M:%S")
                + " UTC",
            ],
        ),
        (500, ["HTTP 500", "try again later"]),
    ],
    ids=["unauthorized", "rate-limited", "server-error"],
)
def test_api_failure_ends_failed_with_a_record(
    project: Path, github: FakeGitHub, fixing_agent: Path, fail: int | str, words: list[str]
) -> None:
    github.add_issue()
    github.fail = fail
    result = cub_issue(project, github.url, fixing_agent)
    assert_no_traceback(result)
    assert result.returncode == 1, result.stdout + result.stderr
    record = read_run(project)
    assert_identity(project)
    assert (record.state, record.reason_code) == ("failed", "github_failed")
    assert record.history[-1].trigger == "setup_failed"
    assert "acme/widgets#7" in record.reason
    for word in words:
        assert word in record.reason, (word, record.reason)
    (request,) = events_of(project, "github_request")
    assert request["ok"] is False and request["error"] and request["method"] == "GET"
    assert record.tasks.attempted == []
    assert not any(b.startswith("fix/") for b in branches(project))
    assert len(github.seen()) == 1  # nothing retried, nothing commented


@exit_path("setup_failed", "preparing", "github_failed")
def test_network_down_ends_failed_with_a_record(project: Path, fixing_agent: Path) -> None:
    result = cub_issue(project, closed_port_url(), fixing_agent)
    assert_no_traceback(result)
    assert result.returncode == 1, result.stdout + result.stderr
    record = read_run(project)
    assert_identity(project)
    assert (record.state, record.reason_code) == ("failed", "github_failed")
    assert_ending(project, result.returncode, "setup_failed", "preparing", "github_failed")
    assert "cannot reach the GitHub API" in record.reason
    assert "connection refused" in record.reason
    (request,) = events_of(project, "github_request")
    assert request["ok"] is False and request["status"] is None


def test_no_origin_and_no_repo_is_rejected(
    tmp_path: Path, github: FakeGitHub, fixing_agent: Path
) -> None:
    project = make_project(tmp_path / "bare")
    result = cub_issue(project, github.url, fixing_agent)
    assert_no_traceback(result)
    assert result.returncode == 2
    (line,) = stderr_lines(result)
    assert "--gh-issue needs a repository: pass --repo OWNER/NAME or add an origin remote" in line
    record = read_run(project)
    assert (record.state, record.reason_code) == ("validation_rejected", "invalid_flag")
    assert github.seen() == []


def test_gh_issue_with_task_is_a_flag_conflict(
    project: Path, github: FakeGitHub, fixing_agent: Path
) -> None:
    result = cub_issue(project, github.url, fixing_agent, "--task", "a")
    assert_no_traceback(result)
    assert result.returncode == 2
    record = read_run(project)
    assert (record.state, record.reason_code) == ("validation_rejected", "flag_conflict")
    assert github.seen() == []


# ------------------------------------------------------------------------------- unit checks


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/acme/widgets",
        "https://github.com/acme/widgets.git",
        "https://user:secret@github.com/acme/widgets.git",
        "git@github.com:acme/widgets.git",
        "git@github.com:acme/widgets",
        "ssh://git@github.com/acme/widgets",
        "ssh://git@github.com:22/acme/widgets.git",
    ],
)
def test_remote_urls_name_the_repository(url: str) -> None:
    assert parse_remote_url(url) == ("github.com", "acme", "widgets")


@pytest.mark.parametrize("url", ["", "/srv/git/widgets.git", "https://github.com/acme"])
def test_remote_urls_without_a_repository(url: str) -> None:
    assert parse_remote_url(url) is None


def test_token_sources_in_order(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    assert resolve_token({"GH_TOKEN": "a", "GITHUB_TOKEN": "b", "PATH": str(bin_dir)}) == "a"
    assert resolve_token({"GITHUB_TOKEN": "b", "PATH": str(bin_dir)}) == "b"
    assert resolve_token({"GH_TOKEN": " ", "PATH": str(bin_dir)}) is None
    write_script(bin_dir / "gh", "#!/bin/sh\necho from-gh\n")
    assert resolve_token({"PATH": str(bin_dir)}) == "from-gh"
    write_script(bin_dir / "gh", "#!/bin/sh\necho 'not logged in' >&2\nexit 1\n")
    assert resolve_token({"PATH": str(bin_dir)}) is None


def test_base_url_from_env_then_config() -> None:
    assert api_base_url({}, None) == "https://api.github.com"
    assert api_base_url({}, "https://ghe.example/api/v3/") == "https://ghe.example/api/v3"
    assert api_base_url({"GITHUB_API_URL": "http://x:1/"}, "https://ghe") == "http://x:1"


def test_client_errors_are_typed_one_liners(github: FakeGitHub) -> None:
    github.add_issue()
    client = GitHubClient(github.url, None)
    assert client.get_issue("acme", "widgets", 7).title == TITLE
    assert "authorization" not in github.seen()[-1].headers
    expected: list[tuple[int | str, type[Exception]]] = [
        (404, NotFound),
        (401, AuthFailed),
        ("rate_limit", RateLimited),
        (503, ServerError),
    ]
    for fail, kind in expected:
        github.fail = fail
        with pytest.raises(kind) as caught:
            client.get_issue("acme", "widgets", 7)
        assert "\n" not in str(caught.value)
    with pytest.raises(NetworkError, match="connection refused"):
        GitHubClient(closed_port_url(), "x", timeout=2).get_issue("acme", "widgets", 7)


def test_prompt_keeps_the_most_recent_comments_within_budget() -> None:
    comments = [Comment(id=i, body=f"comment {i}", user=User(login=f"u{i}")) for i in range(50)]
    shown = recent_comments(comments)
    assert [c.id for c in shown] == list(range(50 - MAX_COMMENTS, 50))
    big = [Comment(id=i, body="x" * 10_000) for i in range(10)]
    assert 1 <= len(recent_comments(big)) <= 5
    issue = Issue(number=3, title="T", body=None)
    prompt = issue_prompt("o/r#3", issue, comments)
    assert "the last 20 of 50" in prompt and "comment 49" in prompt
    assert "comment 29" not in prompt and "(no description)" in prompt


def test_comment_bodies() -> None:
    done = comment_body("gh-1", "completed", "all_tasks_done", "done", "fix/issue-1", "a..b")
    assert done == "cub run `gh-1` fixed this on branch `fix/issue-1`: commits `a..b`."
    failed = comment_body("gh-1", "budget_exhausted", "cost_budget", "out of money", "b", None)
    assert "budget_exhausted" in failed and "cost_budget" in failed and "out of money" in failed


# ------------------------------------------------------------------- where the token may go


def _without_api_url_env(**extra: str) -> dict[str, str]:
    env = env_for("unused", **extra)
    del env["GITHUB_API_URL"]
    return env


def test_a_host_only_the_repository_names_never_gets_the_token(
    project: Path, github: FakeGitHub, fixing_agent: Path
) -> None:
    github.add_issue()
    (project / ".cub" / "config.json").write_text(json.dumps({"github": {"api_url": github.url}}))

    result = run_cub(
        ["run", "--gh-issue", "7", *command_harness(fixing_agent)],
        project,
        env=_without_api_url_env(),
    )

    assert_no_traceback(result)
    assert github.seen(), "the configured API was not asked at all"
    assert all("authorization" not in r.headers for r in github.seen())


def test_a_host_the_user_names_gets_the_token(
    project: Path, github: FakeGitHub, fixing_agent: Path, isolated_home: Path
) -> None:
    github.add_issue()
    (project / ".cub" / "config.json").write_text(json.dumps({"github": {"api_url": github.url}}))
    user_config = isolated_home / ".config" / "cub" / "config.json"
    user_config.parent.mkdir(parents=True)
    user_config.write_text(json.dumps({"github": {"api_url": github.url}}))

    result = run_cub(
        ["run", "--gh-issue", "7", *command_harness(fixing_agent)],
        project,
        env=_without_api_url_env(),
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in github.seen())


@pytest.mark.parametrize("url", ["http://example.com/api", "ftp://127.0.0.1/x"])
def test_an_api_url_that_is_not_https_is_rejected(
    project: Path, fixing_agent: Path, url: str
) -> None:
    (project / ".cub" / "config.json").write_text(json.dumps({"github": {"api_url": url}}))

    result = run_cub(
        ["run", "--gh-issue", "7", *command_harness(fixing_agent)],
        project,
        env=_without_api_url_env(),
    )

    assert result.returncode == 2, result.stdout + result.stderr
    assert_no_traceback(result)
    record = read_run(project)
    assert (record.state, record.reason_code) == ("validation_rejected", "invalid_config")
    assert "https://" in stderr_lines(result)[-1] and url in stderr_lines(result)[-1]
