"""Headless Chromium (Debian's, installed when missing) reading a page: its DOM as the browser
built it, and a screenshot."""

from __future__ import annotations

import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import msgspec

from cub.records.reader import task_attempts
from cub.records.schemas import RunRecord
from tests.helpers.debian import install_debian_package

# No network, no first-run chores, no sandbox (tests run as root): a page and nothing else.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_or_reason() -> tuple[str | None, str | None]:
    problem = install_debian_package("chromium", "chromium")
    return ("chromium", None) if problem is None else (None, problem)


class Element:
    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag = tag
        self.attrs = attrs

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, {k: v or "" for k, v in attrs}))


def dom_of(browser: str, page: Path) -> list[Element]:
    """Every element of ``page`` as Chromium built its DOM."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [browser, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    collector = _Collector()
    collector.feed(done.stdout)
    assert collector.elements, f"no DOM for {page}: {done.stderr[-2000:]}"
    return collector.elements


def screenshot(browser: str, page: Path, target: Path) -> Path:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--screenshot={target}",
                "--window-size=1200,1800",
                page.as_uri(),
            ],
            capture_output=True,
            timeout=120,
            check=True,
        )
    assert target.stat().st_size > 10_000
    return target


def check_report_page(browser: str, page: Path, tmp_path: Path) -> None:
    """Check a `cub runs report` page in the browser against the run's records, and keep a
    screenshot of it in ``tmp_path``."""
    record = msgspec.json.decode((page.parent / "run.json").read_bytes(), type=RunRecord)
    elements = dom_of(browser, page)
    (state,) = [e.attrs["data-run-state"] for e in elements if "data-run-state" in e.attrs]
    assert state == record.state
    visited_edges = {
        e.attrs["data-edge"] for e in elements if "data-edge" in e.attrs and "visited" in e.classes
    }
    assert visited_edges == {f"{t.from_}->{t.to}" for t in record.history}
    visited_states = {
        e.attrs["data-state"]
        for e in elements
        if "data-state" in e.attrs and "visited" in e.classes
    }
    assert visited_states == {t.from_ for t in record.history} | {t.to for t in record.history}
    (final,) = [e.attrs["data-state"] for e in elements if "final" in e.classes]
    assert final == record.state
    bars = sorted(e.attrs["data-attempt"] for e in elements if "data-attempt" in e.attrs)
    # One bar per attempt of the run, and of each child beside it or run inside it.
    recorded = [f"{a.task_id}#{a.attempt}" for _, a in task_attempts(page.parent)]
    children = [page.parent.parent / child.run_id for child in record.children]
    inner = page.parent / "inner"
    children += sorted(inner.iterdir()) if inner.is_dir() else []
    for child_dir in dict.fromkeys(d for d in children if d.is_dir()):
        attempts = task_attempts(child_dir)
        recorded += [f"{child_dir.name}:{a.task_id}#{a.attempt}" for _, a in attempts]
    assert bars == sorted(recorded)
    sections = {e.attrs["data-task"] for e in elements if "data-task" in e.attrs}
    assert sections == {a.task_id for _, a in task_attempts(page.parent)}
    for link in (e.attrs["href"] for e in elements if e.tag == "a"):
        assert (page.parent / link).resolve().exists(), link
    assert not [e for e in elements if e.tag in ("script", "link", "img", "iframe")]
    assert all(e.tag != "b" or e.attrs == {} for e in elements)
    assert "<b>not markup</b>" not in page.read_text().replace("&lt;b&gt;", "")
    screenshot(browser, page, tmp_path / f"{page.parent.name}.png")
