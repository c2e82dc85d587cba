"""Compliance reports (docs/REPORTS.md): evidence collected from the catalog and the repository as plain
data (`evidence`), judged per control (`controls`), rendered as JSON or as a self-contained HTML page
with charts drawn by matplotlib as inline SVG (`charts`, `html`); nothing is fetched from a network."""
