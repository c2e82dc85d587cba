"""The `equisplit-dr` command: thin Typer commands over the Python API, with rich output and --json;
`wal push` and `wal fetch`, which PostgreSQL runs once per WAL file, also run without Typer (entry.py)."""
