"""The S3 mode of bench/run.py (`--storage s3`): one moto server on loopback that both tools use, each
with its own bucket, and the requests each tool made in each step counted from the server's own log.

moto's server (werkzeug) writes one line per request it answered:

    127.0.0.1 - - [05/Dec/2026 05:54:15] "GET /bucket/packs/45c5…?… HTTP/1.1" 206 -

Each timed step takes the log's length before and after it (after the log has stopped growing, so the
last requests' lines are in) and counts the lines in between by bucket, verb and the key's first path
component (our object kind, restic's directory). Path-style addressing (ours with an endpoint_url;
restic with an IP endpoint) puts the bucket first in every path. The server runs in its own process:
its CPU seconds are read from /proc per step and shown beside the tools' own.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REGION = "us-east-1"
#: Dummy credentials: moto accepts anything, and no real account is ever reached.
ENV = {
    "AWS_ACCESS_KEY_ID": "bench-access-key",
    "AWS_SECRET_ACCESS_KEY": "bench-secret-for-moto-only",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}
_CLEARED = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")
_LINE = re.compile(r'"(?:\x1b\[[0-9;]*m)*([A-Z]+) (/[^ ]*) HTTP/[0-9.]+')


def tool_env(env: dict[str, str]) -> dict[str, str]:
    """`env` with the dummy credentials and nothing that could point at a real account."""
    return {**{k: v for k, v in env.items() if k not in _CLEARED}, **ENV}


def classify(method: str, target: str) -> tuple[str, str, str] | None:
    """(bucket, verb, kind) of one logged request; verb is LIST, GET, HEAD, PUT, POST or DELETE."""
    path, _, query = target.partition("?")
    parts = path.lstrip("/").split("/", 2)
    if not parts or not parts[0] or parts[0] == "moto-api":
        return None
    bucket = parts[0]
    key = "/".join(parts[1:])
    kind = key.split("/", 1)[0] if key else "-"
    verb = method
    if method == "GET" and (not key or "list-type=" in query):
        verb, kind = "LIST", _list_prefix_kind(query)
    return bucket, verb, kind


def _list_prefix_kind(query: str) -> str:
    match = re.search(r"(?:^|&)prefix=([^&/%]*)", query)
    return match.group(1) if match and match.group(1) else "-"


@dataclass
class Requests:
    """The requests one tool made in one step."""

    verbs: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)  # "GET packs", "LIST snapshots", ...

    @property
    def total(self) -> int:
        return sum(self.verbs.values())

    def text(self) -> str:
        verbs = " ".join(f"{v} {n}" for v, n in sorted(self.verbs.items()))
        return f"{self.total} requests ({verbs})" if self.total else "0 requests"

    def breakdown(self) -> str:
        return ", ".join(f"{k} {n}" for k, n in self.kinds.most_common())

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "verbs": dict(self.verbs), "kinds": dict(self.kinds)}


def _die_with_parent() -> None:
    """In the server's process before exec: SIGTERM when the benchmark dies (PR_SET_PDEATHSIG), so a
    killed run leaves no server holding its buckets in RAM."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class MotoServer:
    """`moto_server` on a free loopback port, in its own process, its request log in `work/moto.log`."""

    def __init__(self, work: Path) -> None:
        binary = Path(sys.executable).parent / "moto_server"
        if not binary.exists():
            raise RuntimeError(f"{binary} not found: `make setup` installs moto[server] with the test extras")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.log_path = work / "moto.log"
        self.endpoint = f"http://127.0.0.1:{self.port}"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=tool_env(dict(os.environ)), preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"moto_server did not start: {self.log_path.read_text()[-2000:]}") from None
                time.sleep(0.1)
        import boto3

        session = boto3.session.Session(aws_access_key_id=ENV["AWS_ACCESS_KEY_ID"],
                                        aws_secret_access_key=ENV["AWS_SECRET_ACCESS_KEY"], region_name=REGION)
        self.client: Any = session.client("s3", endpoint_url=self.endpoint)

    def cpu_seconds(self) -> float:
        """CPU seconds the server process has used (user + system)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def mark(self, settle: float = 0.3) -> int:
        """The log's length once it has not grown for `settle` seconds (the server logs a request just
        after answering it, so a client can exit before its last line is written)."""
        size = self.log_path.stat().st_size
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(settle)
            now = self.log_path.stat().st_size
            if now == size:
                break
            size = now
        return size

    def requests(self, start: int, end: int, bucket: str) -> Requests:
        """The requests to `bucket` logged between the offsets `start` and `end`."""
        with open(self.log_path, "rb") as log:
            log.seek(start)
            text = log.read(end - start).decode(errors="replace")
        found = Requests()
        for match in _LINE.finditer(text):
            got = classify(match.group(1), match.group(2))
            if got is None or got[0] != bucket:
                continue
            _, verb, kind = got
            found.verbs[verb] += 1
            found.kinds[f"{verb} {kind}"] += 1
        return found

    def create_bucket(self, bucket: str) -> None:
        self.client.create_bucket(Bucket=bucket)

    def remove_bucket(self, bucket: str) -> None:
        """Empty and delete `bucket` (moto holds every object in RAM)."""
        for upload in self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            self.client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        self.client.delete_bucket(Bucket=bucket)

    def bucket_bytes(self, bucket: str) -> int:
        return sum(int(item["Size"]) for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket) for item in page.get("Contents", []))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Meter:
    """Counts one tool's requests and the server's CPU over one timed step."""

    def __init__(self, server: MotoServer, bucket: str) -> None:
        self.server, self.bucket = server, bucket
        self.requests = Requests()
        self.server_cpu = 0.0

    def __enter__(self) -> Meter:
        self._start = self.server.mark()
        self._cpu = self.server.cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self.server.mark()
        self.server_cpu = self.server.cpu_seconds() - self._cpu
        self.requests = self.server.requests(self._start, end, self.bucket)
