"""arXiv identifiers and the export API's Atom feed, parsed with xml.etree into pydantic models.

Pure functions, no I/O: the Atom text comes in, `Feed` comes out.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

ATOM = "{http://www.w3.org/2005/Atom}"
OPENSEARCH = "{http://a9.com/-/spec/opensearch/1.1/}"
ARXIV = "{http://arxiv.org/schemas/atom}"

# New style since 2007 (`2401.12345`, 4 digits after the dot until 2014) and old style
# (`hep-th/9901001`, `math.AG/0601001`), each with an optional version suffix.
_NEW_ID = r"\d{4}\.\d{4,5}"
_OLD_ID = r"[a-z]+(?:-[a-z]+)*(?:\.[A-Z]{2})?/\d{7}"
ID_RE = re.compile(rf"^(?P<base>{_NEW_ID}|{_OLD_ID})(?P<version>v\d+)?$")
_ID_PREFIXES = re.compile(r"^(?:https?://(?:www\.|export\.)?arxiv\.org/(?:abs|pdf)/|arxiv:)", re.IGNORECASE)


class Paper(BaseModel):
    id: str = Field(description="arXiv id without version, e.g. 2401.12345 or hep-th/9901001")
    versioned_id: str = Field(description="The id of the version described, e.g. 2401.12345v2")
    title: str
    authors: list[str]
    summary: str = Field(description="The abstract")
    categories: list[str] = Field(description="All categories, in arXiv's order")
    primary_category: str | None
    published: str = Field(description="First version submitted (ISO 8601)")
    updated: str = Field(description="This version submitted (ISO 8601)")
    abs_url: str
    pdf_url: str


@dataclass
class Feed:
    total_results: int
    start: int
    papers: list[Paper] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # arXiv reports bad queries/ids as "Error" entries


def normalize_id(raw: str) -> str:
    """`arXiv:2401.12345v2`, `https://arxiv.org/abs/2401.12345` or `hep-th/9901001` → the bare id."""
    candidate = _ID_PREFIXES.sub("", raw.strip())
    candidate = candidate.removesuffix(".pdf").strip("/")
    if not ID_RE.match(candidate):
        raise ToolError(
            f"{raw!r} is not an arXiv id; expected e.g. '2401.12345', '2401.12345v2' or 'hep-th/9901001'"
        )
    return candidate


def split_version(paper_id: str) -> tuple[str, str | None]:
    match = ID_RE.match(paper_id)
    if not match:
        return paper_id, None
    return match["base"], match["version"]


def _text(element: ET.Element, tag: str) -> str:
    child = element.find(tag)
    return " ".join((child.text or "").split()) if child is not None else ""


def _int(root: ET.Element, tag: str, default: int) -> int:
    text = _text(root, tag)
    try:
        return int(text)
    except ValueError:
        return default


def _paper(entry: ET.Element) -> Paper | None:
    abs_id = _text(entry, f"{ATOM}id")
    versioned = abs_id.split("/abs/", 1)[1] if "/abs/" in abs_id else ""
    title = _text(entry, f"{ATOM}title")
    if not versioned or not title:
        return None  # arXiv answers unknown ids with an entry that has an id and nothing else
    base, _ = split_version(versioned)
    abs_url = pdf_url = ""
    for link in entry.findall(f"{ATOM}link"):
        if link.get("title") == "pdf" or link.get("type") == "application/pdf":
            pdf_url = link.get("href", "")
        elif link.get("rel") == "alternate":
            abs_url = link.get("href", "")
    primary = entry.find(f"{ARXIV}primary_category")
    return Paper(
        id=base,
        versioned_id=versioned,
        title=title,
        authors=[_text(a, f"{ATOM}name") for a in entry.findall(f"{ATOM}author")],
        summary=_text(entry, f"{ATOM}summary"),
        categories=[c.get("term", "") for c in entry.findall(f"{ATOM}category") if c.get("term")],
        primary_category=primary.get("term") if primary is not None else None,
        published=_text(entry, f"{ATOM}published"),
        updated=_text(entry, f"{ATOM}updated"),
        abs_url=abs_url or f"https://arxiv.org/abs/{versioned}",
        pdf_url=pdf_url or f"https://arxiv.org/pdf/{versioned}",
    )


def parse_feed(text: str | bytes, *, default_start: int = 0) -> Feed:
    """Raises ValueError when the body is not an Atom feed (the caller names the URL)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"not XML ({exc})") from None
    if root.tag != f"{ATOM}feed":
        raise ValueError(f"not an Atom feed (root element {root.tag!r})")
    feed = Feed(
        total_results=_int(root, f"{OPENSEARCH}totalResults", 0),
        start=_int(root, f"{OPENSEARCH}startIndex", default_start),
    )
    for entry in root.findall(f"{ATOM}entry"):
        if "/api/errors" in _text(entry, f"{ATOM}id"):
            feed.errors.append(_text(entry, f"{ATOM}summary") or _text(entry, f"{ATOM}title"))
            continue
        paper = _paper(entry)
        if paper is not None:
            feed.papers.append(paper)
    return feed
