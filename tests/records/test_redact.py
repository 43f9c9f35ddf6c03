"""Redaction of well-known secret shapes: each provider's key is masked whole, in a line of agent
output and inside a JSON record; a PEM private key is masked as a block in a document and line by
line in a stream; ordinary agent output is left exactly as it was; and, end to end, a key given
to the agent through `harness.env` and printed by it appears nowhere under `.cub/runs/`.

Every key here is fake: random characters in the provider's documented shape, made at import
(from a fixed seed) so no key-shaped literal sits in the source.
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
import time
from pathlib import Path

import msgspec
import pytest

from cub.agents.output import LineAssembler
from cub.config.schema import RedactionConfig
from cub.records.location import runs_dir
from cub.records.redact import DEFAULT_SECRET_PATTERNS, MASK, Redactor
from tests.e2e.support import assert_no_traceback, command_harness
from tests.helpers.agents import write_script
from tests.helpers.cli import make_project, read_run, run_cub, run_dir, task

_RNG = random.Random(20250304)
B62 = string.ascii_letters + string.digits
B64URL = B62 + "-_"
B64 = B62 + "+/"
HEX = "0123456789abcdef"
UPPER_DIGITS = string.ascii_uppercase + string.digits


def fake(alphabet: str, n: int) -> str:
    return "".join(_RNG.choice(alphabet) for _ in range(n))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def fake_jwt() -> str:
    header = _b64url(b'{"alg":"HS256","typ":"JWT"}')
    payload = _b64url(b'{"sub":"1234567890","name":"cub test","iat":1700000000}')
    return f"{header}.{payload}.{fake(B64URL, 43)}"


# provider -> a realistic fake key of its documented shape
KEYS: dict[str, str] = {
    "google-api-key": "AIza" + fake(B64URL, 35),
    "google-oauth-client-secret": "GOCSPX-" + fake(B64URL, 28),
    "google-oauth-access-token": "ya29." + fake(B64URL, 120),
    "anthropic-api-key": "sk-ant-api03-" + fake(B64URL, 93) + "AA",
    "anthropic-admin-key": "sk-ant-admin01-" + fake(B64URL, 93) + "AA",
    "openai-legacy-key": "sk-" + fake(B62, 20) + "T3BlbkFJ" + fake(B62, 20),
    "openai-project-key": "sk-proj-" + fake(B64URL, 156),
    "openai-service-account-key": "sk-svcacct-" + fake(B64URL, 156),
    "github-classic-pat": "ghp_" + fake(B62, 36),
    "github-oauth": "gho_" + fake(B62, 36),
    "github-app-user": "ghu_" + fake(B62, 36),
    "github-app-server": "ghs_" + fake(B62, 36),
    "github-refresh": "ghr_" + fake(B62, 36),
    "github-fine-grained-pat": "github_pat_" + fake(B62, 22) + "_" + fake(B62, 59),
    "gitlab-pat": "glpat-" + fake(B64URL, 20),
    "gitlab-deploy-token": "gldt-" + fake(B64URL, 20),
    "aws-access-key-id": "AKIA" + fake(UPPER_DIGITS, 16),
    "aws-temporary-access-key-id": "ASIA" + fake(UPPER_DIGITS, 16),
    "slack-bot": "xoxb-"
    + fake(string.digits, 12)
    + "-"
    + fake(string.digits, 13)
    + "-"
    + fake(B62, 24),
    "slack-user": "xoxp-"
    + fake(string.digits, 12)
    + "-"
    + fake(string.digits, 12)
    + "-"
    + fake(string.digits, 13)
    + "-"
    + fake(HEX, 32),
    "slack-app": "xoxa-2-" + fake(string.digits, 12) + "-" + fake(B62, 24),
    "slack-refresh": "xoxr-" + fake(string.digits, 12) + "-" + fake(B62, 40),
    "slack-session": "xoxs-" + fake(string.digits, 12) + "-" + fake(B62, 40),
    "slack-app-level": "xapp-1-A"
    + fake(UPPER_DIGITS, 10)
    + "-"
    + fake(string.digits, 13)
    + "-"
    + fake(HEX, 64),
    "stripe-secret-live": "sk_live_" + fake(B62, 99),
    "stripe-secret-test": "sk_test_" + fake(B62, 24),
    "stripe-restricted-live": "rk_live_" + fake(B62, 99),
    "stripe-publishable-live": "pk_live_" + fake(B62, 99),
    "stripe-webhook-secret": "whsec_" + fake(B62, 32),
    "jwt": fake_jwt(),
    "npm": "npm_" + fake(B62, 36),
    "pypi": "pypi-AgEIcHlwaS5vcmc" + fake(B64URL, 120),
    "hugging-face": "hf_" + fake(string.ascii_letters, 34),
    "sendgrid": "SG." + fake(B64URL, 22) + "." + fake(B64URL, 43),
    "twilio-api-key-sid": "SK" + fake(HEX, 32),
}

# Where a key shows up in agent output: alone, in a shell line, in code, in prose.
CONTEXTS = ("{}", "export API_KEY={}", 'client = Client(api_key="{}")', "the key is {}.")


@pytest.mark.parametrize("provider", sorted(KEYS))
def test_provider_key_is_masked_entirely(provider: str) -> None:
    key = KEYS[provider]
    redact = Redactor()
    for context in CONTEXTS:
        assert redact(context.format(key)) == context.format(MASK)


@pytest.mark.parametrize("provider", sorted(KEYS))
def test_provider_key_is_masked_inside_a_json_record(provider: str) -> None:
    record = {"config": {"harness": {"env": {"SOME_KEY": KEYS[provider], "MODE": "fast"}}}}
    redacted = json.loads(msgspec.json.encode(Redactor().value(record)))
    assert redacted == {"config": {"harness": {"env": {"SOME_KEY": MASK, "MODE": "fast"}}}}


def test_bearer_credentials_are_masked_with_their_scheme() -> None:
    token = fake(B64URL, 40)
    redact = Redactor()
    assert redact(f"Authorization: Bearer {token}") == f"Authorization: {MASK}"
    assert redact(f"curl -H 'authorization: bearer {token}'") == f"curl -H 'authorization: {MASK}'"


def test_slack_webhook_url_loses_its_secret_path() -> None:
    path = f"services/T{fake(UPPER_DIGITS, 8)}/B{fake(UPPER_DIGITS, 8)}/{fake(B62, 24)}"
    line = f"posting to https://hooks.slack.com/{path} now"
    assert Redactor()(line) == f"posting to https://{MASK} now"


AWS_SECRET = fake(B64, 40)


@pytest.mark.parametrize(
    "line",
    [
        f"aws_secret_access_key = {AWS_SECRET}",
        f'export AWS_SECRET_ACCESS_KEY="{AWS_SECRET}"',
        f'        "SecretAccessKey": "{AWS_SECRET}",',
        f"AWS_SECRET_KEY: {AWS_SECRET}",
    ],
)
def test_labelled_aws_secret_access_key_is_masked(line: str) -> None:
    redacted = Redactor()(line)
    assert AWS_SECRET not in redacted
    assert MASK in redacted


# ------------------------------------------------------------------ private keys


def fake_pem(label: str, body_bytes: int = 1190, width: int = 64) -> str:
    body = base64.b64encode(_RNG.randbytes(body_bytes)).decode()
    lines = [body[i : i + width] for i in range(0, len(body), width)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"])


PEMS = {
    "rsa": fake_pem("RSA PRIVATE KEY"),
    "pkcs8": fake_pem("PRIVATE KEY", 1218),
    "ec": fake_pem("EC PRIVATE KEY", 121),
    "encrypted-pkcs8": fake_pem("ENCRYPTED PRIVATE KEY", 1298),
    "openssh": fake_pem("OPENSSH PRIVATE KEY", 387, width=70),
    "pgp": fake_pem("PGP PRIVATE KEY BLOCK", 1800),
}


def _full_body_lines(pem: str) -> list[str]:
    """The key's base64 lines of full width (every one but, usually, the last)."""
    body = pem.splitlines()[1:-1]
    return [line for line in body if len(line) == len(body[0])]


@pytest.mark.parametrize("kind", sorted(PEMS))
def test_private_key_block_in_a_document_is_masked_whole(kind: str) -> None:
    text = f"Found this in the repo:\n{PEMS[kind]}\nI removed it from the config.\n"
    assert Redactor()(text) == f"Found this in the repo:\n{MASK}\nI removed it from the config.\n"


@pytest.mark.parametrize("kind", sorted(PEMS))
def test_private_key_in_a_json_record_is_masked_whole(kind: str) -> None:
    # A service-account file or a tool result: the key is one JSON string with \n escapes.
    record = {"type": "service_account", "private_key": PEMS[kind] + "\n", "project": "p"}
    redacted = json.loads(msgspec.json.encode(Redactor().value(record)))
    assert redacted == {"type": "service_account", "private_key": MASK + "\n", "project": "p"}


@pytest.mark.parametrize("kind", sorted(PEMS))
def test_private_key_streamed_line_by_line_is_masked(kind: str) -> None:
    # As an agent's output reaches harness.log: in chunks, assembled and redacted per line.
    pem = PEMS[kind]
    data = f"$ cat id_key\n{pem}\n$ echo done\n".encode()
    assembler = LineAssembler(Redactor(), partial_after=1.0)
    lines: list[str] = []
    log = ""
    for start in range(0, len(data), 97):
        piece = assembler.feed(data[start : start + 97], now=0.0)
        lines += piece.lines.split("\n")[:-1]
        log += piece.log
    assert lines[0] == "$ cat id_key" and lines[-1] == "$ echo done"
    assert "PRIVATE KEY" not in log
    full = _full_body_lines(pem)
    assert full, "the fake key has full-width lines"
    for body_line in full:
        assert body_line not in log
    # BEGIN, END and every full-width body line; only a short last body line may remain.
    assert lines.count(MASK) == len(full) + 2
    assert len(lines) - 2 - lines.count(MASK) <= 1


# ------------------------------------------------------------------ no false positives

ORDINARY_OUTPUT = [
    "commit 3f9a1c2e8b7d6f5a4e3d2c1b0a9f8e7d6c5b4a39",
    "3f9a1c2 Fix race in supervisor shutdown (#142)",
    "Author: Jane Doe <jane.doe@example.com>",
    "Date:   Tue Mar 4 10:12:33 2025 +0100",
    "Merge pull request #88 from acme/feature/task-management-service-refactor",
    "/home/dev/projects/cub/tests/records/test_redact.py:42: AssertionError",
    "src/components/TaskManagementServiceHandler/IndexController.tsx",
    "550e8400-e29b-41d4-a716-446655440000",
    "run_id=20250304-101233-7f3a9c  task_id=cub-042",
    "aGVsbG8gd29ybGQ=",
    "dXNlcjpwYXNzd29yZA==",
    "echo 'eyJhIjoxfQ==' | base64 -d",
    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b4c8b7d1e2c0f5f3a8f5d9e1a",
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b4c8b7d1e2c0f5f3a8f5d9e1a",
    "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B4C8B7D1E2C0F5F3A8F5D9E1A",
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b4c8b7d1e2c0f5f3a8f5d9e1a  dist/cub-0.1.0.tar.gz",
    "    def mask_secrets(self, text: str) -> str:",
    "        return self._regex.sub(MASK, text)  # see risk-based-prioritisation-of-tasks",
    "from sklearn.model_selection import train_test_split",
    "pip install scikit-learn==1.5.0 huggingface-hub>=0.23 ask-the-user-before-deleting",
    "path = hf_hub_download(repo_id='gpt2', filename='config.json')",
    "npm_config_cache=/tmp/npm-cache npm install --save-dev typescript",
    "===== 412 passed, 3 skipped in 12.34s =====",
    "SKIPPED [1] tests/e2e/test_real_agents.py:44: claude not on PATH",
    "The client reads a Bearer token from the environment.",
    "Set ANTHROPIC_API_KEY, OPENAI_API_KEY or GEMINI_API_KEY before running.",
    "Access key ids start with AKIA or ASIA; GitHub tokens with ghp_ and Slack's with xoxb-.",
    "-----BEGIN CERTIFICATE-----",
    "-----BEGIN PUBLIC KEY-----",
    "task-management-service-handler-v2",
    "disk-usage-report-generator-for-nodes",
    "https://github.com/acme/widgets/pull/42/files#diff-3f9a1c2e8b7d6f5a?page=2&per_page=100",
    '{"type":"tool_use","name":"Bash","input":{"command":"pytest -q tests/records"}}',
    f'"checksum": "{fake(B64, 40)}"',
    "xoxo-gossip and sk-short",
]


@pytest.mark.parametrize("line", ORDINARY_OUTPUT)
def test_ordinary_output_line_is_unchanged(line: str) -> None:
    assert Redactor()(line) == line


def test_ordinary_output_as_a_document_and_a_record_is_unchanged() -> None:
    text = "\n".join(ORDINARY_OUTPUT) + "\n"
    assert Redactor()(text) == text
    record = {"output": text, "lines": ORDINARY_OUTPUT}
    assert Redactor().value(record) == record


# ------------------------------------------------------------------ patterns and settings


def test_defaults_grouped_by_first_character_match_exactly_as_listed() -> None:
    # The redactor joins the defaults grouped by first character for speed; that must not
    # change a single match compared with the plain alternation of the listed patterns.
    plain = re.compile("|".join(f"(?:{p})" for p in DEFAULT_SECRET_PATTERNS))
    samples = [*ORDINARY_OUTPUT, *(c.format(k) for k in KEYS.values() for c in CONTEXTS)]
    samples += [f"x {a} y {b}" for a, b in zip(KEYS.values(), reversed(KEYS.values()), strict=True)]
    samples += [f"-- {pem} --" for pem in PEMS.values()]
    redact = Redactor()
    for sample in samples:
        assert redact(sample) == plain.sub(MASK, sample), sample


def test_every_default_pattern_starts_with_a_literal_character() -> None:
    # What keeps the joined regex fast: it is only tried where such a character occurs.
    for pattern in DEFAULT_SECRET_PATTERNS:
        assert pattern[0].isalnum() or pattern[0] == "-", pattern
        assert pattern[1] not in "*+?{", pattern


def test_configured_patterns_add_to_the_defaults() -> None:
    redact = Redactor.for_config(RedactionConfig(patterns=[r"hunter2-[0-9]+"]))
    google = KEYS["google-api-key"]
    assert redact(f"{google} hunter2-4711") == f"{MASK} {MASK}"


def test_without_defaults_only_configured_patterns_apply() -> None:
    redact = Redactor.for_config(RedactionConfig(patterns=[r"hunter2-[0-9]+"], use_defaults=False))
    google = KEYS["google-api-key"]
    body_line = _full_body_lines(PEMS["rsa"])[0]
    assert redact(f"{google} hunter2-4711") == f"{google} {MASK}"
    assert redact(body_line) == body_line


def test_redaction_of_ordinary_lines_stays_fast() -> None:
    # A generous bound (the measured cost is a few µs per 100-byte line): it catches a pattern
    # that backtracks or a regex that lost its first-character scan, not a slow machine.
    lines = [(line * 3)[:100] for line in ORDINARY_OUTPUT] * 60
    redact = Redactor()
    start = time.perf_counter()
    for line in lines:
        redact(line)
    per_line = (time.perf_counter() - start) / len(lines)
    assert per_line < 50e-6, f"{per_line * 1e6:.1f} µs per line"


def test_many_unterminated_key_headers_cost_one_pass() -> None:
    text = "-----BEGIN RSA PRIVATE KEY-----\n" * 30_000  # ~1 MB, no END anywhere
    start = time.perf_counter()
    redacted = Redactor()(text)
    assert time.perf_counter() - start < 2.0
    assert redacted == f"{MASK}\n" * 30_000


# ------------------------------------------------------------------ end to end


def test_key_from_harness_env_printed_by_the_agent_is_nowhere_under_runs(tmp_path: Path) -> None:
    google = KEYS["google-api-key"]
    anthropic = KEYS["anthropic-api-key"]
    pem = PEMS["rsa"]
    project = make_project(
        tmp_path / "proj",
        [task("a", description=f"Call the API with {anthropic}.")],
        config={"harness": {"env": {"GEMINI_API_KEY": google}}},
    )
    received = tmp_path / "received.txt"
    script = write_script(
        tmp_path / "agent",
        f"""
        import os, sys
        from pathlib import Path
        key = os.environ["GEMINI_API_KEY"]
        Path({str(received)!r}).write_text(key)
        print("using GEMINI_API_KEY=" + key, flush=True)
        print("error: key " + key + " was rejected", file=sys.stderr, flush=True)
        print({pem!r}, flush=True)
        print("<stuck>the key " + key + " does not work</stuck>", flush=True)
        """,
    )
    result = run_cub(["run", "--on-failure", "continue", *command_harness(script)], project)
    assert_no_traceback(result)
    assert received.read_text() == google  # the agent itself got the real key
    root = runs_dir(project)
    files = [p for p in root.rglob("*") if p.is_file()]
    assert {"run.json", "events.jsonl", "harness.log", "prompt.md", "task.json"} <= {
        p.name for p in files
    }
    secrets = [google, anthropic, *_full_body_lines(pem)]
    for path in files:
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"{secret[:12]}… in {path.relative_to(root)}"
        assert "PRIVATE KEY" not in text, f"key header in {path.relative_to(root)}"
    assert read_run(project).config["harness"]["env"]["GEMINI_API_KEY"] == MASK
    log = (run_dir(project) / "tasks" / "a" / "harness.log").read_text()
    assert "using GEMINI_API_KEY=[REDACTED]" in log
