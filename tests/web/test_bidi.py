"""A name from a report that stands inside a sentence or a list on a page is isolated in
``<bdi>``: a bidi override in it cannot reorder the page text around it."""

from __future__ import annotations

import httpx

from tests.serving import Serve


def test_names_inside_sentences_and_lists_are_isolated(server: Serve) -> None:
    base = server.http_url
    evil = httpx.get(f"{base}/reports?format=json&domain=evil.example").json()["reports"][0]
    report = httpx.get(f"{base}/reports/{evil['id']}").text
    assert "<h1>Report <bdi>&lt;script&gt;rid&lt;/script&gt;</bdi></h1>" in report
    assert "for <bdi>evil.example</bdi>:" in report
    assert "<bdi>evil.example</bdi>" in httpx.get(f"{base}/reports?domain=evil.example").text
    domain = httpx.get(f"{base}/domains/evil.example").text
    assert "<b><bdi>certificate-expired</bdi></b>" in domain
    assert "<bdi>Evil &lt;script&gt;alert(&#39;org&#39;)&lt;/script&gt; Ltd</bdi>" in domain


def test_names_in_the_domain_tables_are_isolated(server: Serve) -> None:
    domain = httpx.get(f"{server.http_url}/domains/evil.example").text
    orgs = domain[domain.index('<table id="orgs">'):]
    assert "<tr><td><bdi>Evil &lt;script&gt;alert(&#39;org&#39;)&lt;/script&gt; Ltd</bdi></td>" \
        in orgs[:orgs.index("</table>")]
    mx = domain[domain.index('<table id="mx">'):]
    assert "<tr><td><bdi>" in mx[:mx.index("</table>")]
