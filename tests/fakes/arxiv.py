"""A fake arXiv export API: `GET /api/query` answering Atom shaped like the real service's responses.

It holds a small paper database (modelled on real records), records every request it receives (query
params, headers, arrival time on the monotonic clock), and can be told to misbehave.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ID_FORMAT = re.compile(r"^(\d{4}\.\d{4,5}|[a-z-]+(\.[A-Z]{2})?/\d{7})(v\d+)?$")

# Records as arXiv serves them (titles and abstracts wrap across lines and carry stray spaces).
PAPERS: list[dict[str, Any]] = [
    {
        "id": "1706.03762",
        "version": 7,
        "published": "2017-06-12T17:57:34Z",
        "updated": "2023-08-02T00:41:18Z",
        "title": "Attention Is All You Need",
        "summary": "  The dominant sequence transduction models are based on complex recurrent or\n"
        "convolutional neural networks in an encoder-decoder configuration.  We propose\n"
        "a new simple network architecture, the Transformer.\n",
        "authors": ["Ashish Vaswani", "Noam Shazeer", "Niki Parmar", "Jakob Uszkoreit"],
        "categories": ["cs.CL", "cs.LG"],
        "comment": "15 pages, 5 figures",
    },
    {
        "id": "hep-th/9711200",
        "version": 3,
        "published": "1997-11-27T21:09:44Z",
        "updated": "1998-01-22T20:50:21Z",
        "title": "The Large N Limit of Superconformal Field Theories and Supergravity",
        "summary": "  We show that the large N limit of certain conformal field theories in various\n"
        "dimensions include in their Hilbert space a sector describing supergravity.\n",
        "authors": ["Juan M. Maldacena"],
        "categories": ["hep-th"],
        "comment": "20 pages, harvmac",
    },
    {
        "id": "2401.04088",
        "version": 1,
        "published": "2024-01-08T18:47:34Z",
        "updated": "2024-01-08T18:47:34Z",
        "title": "Mixtral of\n  Experts",
        "summary": "We introduce Mixtral 8x7B, a Sparse Mixture of Experts (SMoE) language model.",
        "authors": ["Albert Q. Jiang", "Alexandre Sablayrolles"],
        "categories": ["cs.LG", "cs.CL"],
        "comment": None,
    },
]

HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <link href="http://arxiv.org/api/query?{query}" rel="self" type="application/atom+xml"/>
  <title type="html">ArXiv Query: {query}</title>
  <id>http://arxiv.org/api/2mJ0Pz1bNfVK0uS1Jq3Xs9GdCkE</id>
  <updated>2024-05-01T00:00:00-04:00</updated>
  <opensearch:totalResults xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">{total}</opensearch:totalResults>
  <opensearch:startIndex xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">{start}</opensearch:startIndex>
  <opensearch:itemsPerPage xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">{per_page}</opensearch:itemsPerPage>
"""


def entry_xml(paper: dict[str, Any]) -> str:
    vid = f"{paper['id']}v{paper['version']}"
    arxiv_ns = 'xmlns:arxiv="http://arxiv.org/schemas/atom"'
    lines = [
        "  <entry>",
        f"    <id>http://arxiv.org/abs/{vid}</id>",
        f"    <updated>{paper['updated']}</updated>",
        f"    <published>{paper['published']}</published>",
        f"    <title>{escape(paper['title'])}</title>",
        f"    <summary>{escape(paper['summary'])}</summary>",
        *(f"    <author>\n      <name>{escape(a)}</name>\n    </author>" for a in paper["authors"]),
    ]
    if paper.get("comment"):
        lines.append(f"    <arxiv:comment {arxiv_ns}>{escape(paper['comment'])}</arxiv:comment>")
    lines += [
        f'    <link href="http://arxiv.org/abs/{vid}" rel="alternate" type="text/html"/>',
        f'    <link title="pdf" href="http://arxiv.org/pdf/{vid}" rel="related" type="application/pdf"/>',
        f"    <arxiv:primary_category {arxiv_ns} term={quoteattr(paper['categories'][0])} "
        'scheme="http://arxiv.org/schemas/atom"/>',
        *(
            f'    <category term={quoteattr(c)} scheme="http://arxiv.org/schemas/atom"/>'
            for c in paper["categories"]
        ),
        "  </entry>",
    ]
    return "\n".join(lines)


def error_entry_xml(message: str) -> str:
    anchor = "http://arxiv.org/api/errors#" + message.replace(" ", "_")
    return (
        f"  <entry>\n    <id>{escape(anchor)}</id>\n    <title>Error</title>\n"
        f"    <summary>{escape(message)}</summary>\n    <updated>2024-05-01T00:00:00-04:00</updated>\n"
        f'    <link href="{escape(anchor)}" rel="alternate" type="text/html"/>\n'
        "    <author>\n      <name>arXiv api core</name>\n    </author>\n  </entry>"
    )


def feed_xml(entries: list[str], *, total: int, start: int, per_page: int, query: str = "") -> str:
    head = HEAD.format(query=escape(query), total=total, start=start, per_page=per_page)
    return head + "\n".join(entries) + "\n</feed>\n"


@dataclass
class Recorded:
    params: dict[str, str]
    headers: dict[str, str]
    arrived: float  # time.monotonic() when the request reached the fake


@dataclass
class ArxivFake:
    papers: list[dict[str, Any]] = field(default_factory=lambda: list(PAPERS))
    total_results: int | None = None  # a search reports len(papers) unless set
    delay: float = 0.0  # seconds before answering (timeout tests)
    override: Response | None = None  # answer this instead of the feed
    requests: list[Recorded] = field(default_factory=list)

    def reset(self) -> None:
        self.papers = list(PAPERS)
        self.total_results = None
        self.delay = 0.0
        self.override = None
        self.requests.clear()

    async def query(self, request: Request) -> Response:
        self.requests.append(Recorded(dict(request.query_params), dict(request.headers), time.monotonic()))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.override is not None:
            return self.override
        params = request.query_params
        start = int(params.get("start", "0"))
        max_results = int(params.get("max_results", "10"))
        if params.get("id_list"):
            return self._by_id(params["id_list"].split(","), params)
        page = self.papers[start : start + max_results]
        total = len(self.papers) if self.total_results is None else self.total_results
        xml = feed_xml([entry_xml(p) for p in page], total=total, start=start, per_page=max_results)
        return Response(xml, media_type="application/atom+xml; charset=utf-8")

    def _by_id(self, ids: list[str], params: Any) -> Response:
        bad = [i for i in ids if not ID_FORMAT.match(i)]
        if bad:  # the real API answers 400 with a one-entry error feed
            xml = feed_xml(
                [error_entry_xml(f"incorrect id format for {bad[0]}")], total=1, start=0, per_page=1
            )
            return Response(xml, status_code=400, media_type="application/atom+xml; charset=utf-8")
        entries = []
        for wanted in ids:
            match = ID_FORMAT.match(wanted)
            assert match is not None
            base, version = match.group(1), match.group(3)
            for paper in self.papers:
                if paper["id"] == base:
                    shown = dict(paper, version=int(version[1:])) if version else paper
                    entries.append(entry_xml(shown))
        xml = feed_xml(entries, total=len(entries), start=0, per_page=int(params.get("max_results", "10")))
        return Response(xml, media_type="application/atom+xml; charset=utf-8")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/api/query", self.query)])
