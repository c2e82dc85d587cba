"""The `equisplit-dr` command: thin Typer commands over the Python API, with rich output and --json."""
