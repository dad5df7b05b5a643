"""Write docs/reason-codes.md from the failure-reason-code catalogue.

Run: python tools/reason_codes_page.py   (a test fails while the page is out of date)
"""

from __future__ import annotations

from pathlib import Path

from tlswatch.analytics.reasons import catalogue_markdown

PAGE = Path(__file__).resolve().parent.parent / "docs" / "reason-codes.md"

if __name__ == "__main__":
    PAGE.write_text(catalogue_markdown(), encoding="utf-8")
    print(f"wrote {PAGE}")
