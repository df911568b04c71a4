"""Every relative link in README.md and docs/*.md points to a file that exists, and a link with
`#anchor` to a heading that exists in it, so the docs do not rot as files and headings move.

Anchors are GitHub's: the heading's text, lowercased, without punctuation, spaces as hyphens,
repeated headings numbered `-1`, `-2`, ... Links inside code (fenced blocks, `inline spans`)
are not links and are skipped, as are absolute URLs.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+).*?\1")
# [text](target) and ![alt](target); the target ends at whitespace (a title may follow) or ")".
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _prose_lines(text: str) -> list[str]:
    """The page's lines outside fenced code blocks, with inline code spans blanked."""
    lines: list[str] = []
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(_INLINE_CODE.sub("", line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (before de-duplication)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays
    kept = []
    for ch in text.lower():
        category = unicodedata.category(ch)
        if ch in " -" or category[0] in "LMN" or category == "Pc":
            kept.append(ch)
    return "".join(kept).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    return [
        target
        for line in _prose_lines(page.read_text(encoding="utf-8"))
        for target in _LINK.findall(line)
    ]


def broken_links(page: Path) -> list[str]:
    problems: list[str] = []
    for target in links(page):
        if _SCHEME.match(target):
            continue  # an absolute URL: not checked offline
        path_part, _, anchor = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        if not destination.exists():
            problems.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            problems.append(f"{target}: no heading #{anchor} in {destination.name}")
    return problems


def test_slugs_follow_githubs_rules() -> None:
    assert slug("Connecting… stays on screen") == "connecting-stays-on-screen"
    assert slug("The write path (`services/journaled.py`)") == "the-write-path-servicesjournaledpy"
    assert (
        slug("How no game server's write is ever lost") == "how-no-game-servers-write-is-ever-lost"
    )
    assert slug("Auth: `--keys`") == "auth---keys"
    assert slug("3. Pair the plugin with the server") == "3-pair-the-plugin-with-the-server"
    assert slug("See [the docs](docs/README.md)") == "see-the-docs"


def test_repeated_headings_are_numbered(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n## What can go wrong\n```\n# not a heading\n```\n## What can go wrong\n"
    )
    assert anchors(page) == {"title", "what-can-go-wrong", "what-can-go-wrong-1"}


def test_links_in_code_are_not_links(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        '[a](a.md) and `[b](b.md)` and ![c](c.png "title")\n```\n[d](d.md)\n```\n[e](#top)\n'
    )
    assert links(page) == ["a.md", "c.png", "#top"]


def test_missing_files_and_headings_are_reported(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Here\n")
    (tmp_path / "c.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text(
        "# Top\n[a](a.md) [h](a.md#here) [x](a.md#nope) ![c](c.png) [g](gone.md) [t](#top)"
        " [u](#up) [w](https://example.com/missing)\n"
    )
    assert broken_links(page) == [
        "a.md#nope: no heading #nope in a.md",
        "gone.md: no such file",
        "#up: no heading #up in page.md",
    ]


def test_the_pages_are_found() -> None:
    names = {page.name for page in PAGES}
    assert {"README.md", "getting-started.md", "troubleshooting.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert links(page) or page.name != "README.md", "the README links to the docs"
    assert broken_links(page) == []
