"""HTML for people: Jinja2 templates and SVG charts, shared by the dashboard and the daily
files, so the exports never depend on the web layer (and the pages are free to change)."""
