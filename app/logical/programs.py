"""pg_dump and pg_restore: which binary (the server's major version, from PG_BIN_DIR or the usual
places), its version, and what it wrote on stderr (read on a thread, so a chatty program never blocks)."""

from __future__ import annotations

import re
import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from app.errors import ConfigurationError
from app.pitr.server import find_bin_dir

_VERSION = re.compile(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?")
TAIL_LINES = 40


@dataclass(frozen=True)
class Program:
    path: Path
    version: str  # e.g. "15.20"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


def find_program(configured: Path | None, name: str, major: int) -> Program:
    """`name` (pg_dump, pg_restore) for a server of `major`: ConfigurationError if it is missing or
    older than the server (pg_dump cannot read, nor pg_restore write, a newer server's catalog)."""
    path = find_bin_dir(configured, str(major), name) / name
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigurationError(f"cannot run {path} --version: {exc}", hint="set PG_BIN_DIR") from None
    match = _VERSION.search(out)
    if match is None:
        raise ConfigurationError(f"{path} --version said {out.strip()!r}, not a PostgreSQL version")
    program = Program(path, match.group(1) + (f".{match.group(2)}" if match.group(2) else ""))
    if program.major < major:
        raise ConfigurationError(
            f"{path} is PostgreSQL {program.version}; this needs PostgreSQL {major} or later (the "
            "server's version, and for pg_restore also the dump's)",
            hint=f"install PostgreSQL {major}'s client programs, or set PG_BIN_DIR to them",
        )
    return program


class StderrTail(threading.Thread):
    """Drains a program's stderr, keeping its last lines for the error message."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(daemon=True, name="stderr-tail")
        self.stream = stream
        self.lines: deque[str] = deque(maxlen=TAIL_LINES)

    def run(self) -> None:
        with self.stream:
            for raw in self.stream:
                line = raw.decode(errors="replace").rstrip()
                if line:
                    self.lines.append(line)

    def summary(self) -> str | None:
        """The first error line the program wrote (else its last line), or None if it said nothing."""
        self.join(timeout=5)
        for line in self.lines:
            if "error:" in line:
                return line
        return self.lines[-1] if self.lines else None
