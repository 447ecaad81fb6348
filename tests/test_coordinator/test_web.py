"""``coordinator.web.page``: one self-contained HTML file, live or with a snapshot built in."""

from __future__ import annotations

import json
import re
from pathlib import Path

from coordinator import web

SLOT = re.compile(r'<script id="snapshot" type="application/json">(.*?)</script>', re.S)


def test_the_live_page_inlines_every_asset_and_fetches_nothing() -> None:
    html = web.page()
    assert "<!--inline:" not in html
    for asset in ("page.js", "page.css", "world.js"):
        text = (web.PAGE_DIR / asset).read_text(encoding="utf-8")
        assert text in html, asset
    # The snapshot slot parses as JSON null: the page then polls /api/snapshot.
    match = SLOT.search(html)
    assert match is not None and json.loads(match.group(1)) is None
    # Nothing from another host: no http(s) URL in a src/href, no CDN.
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html)


def test_a_report_embeds_the_snapshot_safely(tmp_path: Path) -> None:
    snap = {"pipeline": "</script><!--<script>alert(1)</script>", "workers": [], "n": 3}
    path = tmp_path / "report.html"
    web.write_report(snap, path)
    html = path.read_text(encoding="utf-8")
    match = SLOT.search(html)
    assert match is not None
    assert json.loads(match.group(1)) == snap
    assert html.count("</script>") == html.count("<script")  # nothing closed early
    assert not list(tmp_path.glob("*.tmp"))
