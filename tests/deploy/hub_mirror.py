"""A local server that speaks enough of the Hugging Face hub's HTTP protocol for huggingface_hub and
transformers to download models from it (what a mirror such as hf-mirror.com or a company proxy does).

* ``HEAD|GET /{repo}/resolve/{revision}/{path}``: the file, with ``X-Repo-Commit``, ``ETag`` (the file's
  sha256, as the hub gives for LFS files), ``Content-Length`` and ``Accept-Ranges``; ``Range`` requests
  are honoured (huggingface_hub resumes an interrupted download with one);
* ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{revision}``: the repo's commit and files;
* everything else, and missing repos, revisions and files: 404 with the hub's ``X-Error-Code``
  (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``), as huggingface_hub expects.

Faults, per file name: ``cut_once`` (the first GET of the file stops half way: the connection closes before
``Content-Length`` bytes), ``cut_always`` (every GET stops half way through what it asked for), ``garbage``
(the right length, the wrong bytes). ``requests`` records every request as ``(method, path, range)``.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from pathlib import Path
from typing import Dict, List, Optional, Tuple

RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)$")
API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<revision>[^/]+))?/?$")


class HubMirror:
    def __init__(self, repos: Dict[str, Path]) -> None:
        self.repos: Dict[str, Dict[str, bytes]] = {}
        self.commits: Dict[str, str] = {}
        for repo, folder in repos.items():
            files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
            self.repos[repo] = files
            digest = hashlib.sha1(repo.encode() + b"".join(hashlib.sha1(c).digest() for c in files.values()))
            self.commits[repo] = digest.hexdigest()
        self.faults: Dict[str, str] = {}
        self.requests: List[Tuple[str, str, Optional[str]]] = []
        self._cut_done: set = set()
        self._lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "HubMirror":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def downloads(self, repo: str) -> List[str]:
        """The files of ``repo`` fetched with GET (the bodies transferred)."""
        prefix = f"/{repo}/resolve/"
        return [
            path.split("/resolve/", 1)[1].split("/", 1)[1]
            for method, path, _ in self.requests
            if method == "GET" and path.startswith(prefix)
        ]

    # ------------------------------------------------------------------------------------- HTTP
    def _handler(self) -> type:
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:  # noqa: N802
                mirror._serve(self, body=False)

            def do_GET(self) -> None:  # noqa: N802
                mirror._serve(self, body=True)

        return Handler

    def _error(self, handler: http.server.BaseHTTPRequestHandler, code: str, message: str) -> None:
        payload = json.dumps({"error": message}).encode("utf-8")
        handler.send_response(404)
        handler.send_header("X-Error-Code", code)
        handler.send_header("X-Error-Message", message)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        if handler.command == "GET":
            handler.wfile.write(payload)

    def _serve(self, handler: http.server.BaseHTTPRequestHandler, body: bool) -> None:
        path = handler.path.split("?", 1)[0]
        with self._lock:
            self.requests.append((handler.command, path, handler.headers.get("Range")))
        api = API.match(path)
        if api:
            return self._api(handler, api.group("repo"), api.group("revision") or "main")
        match = RESOLVE.match(path)
        if not match:
            return self._error(handler, "EntryNotFound", f"{path} is not served by this mirror")
        repo, revision, name = match.group("repo"), match.group("revision"), match.group("path")
        if repo not in self.repos:
            return self._error(handler, "RepoNotFound", f"Repository {repo} not found")
        if revision not in ("main", self.commits[repo]):
            return self._error(handler, "RevisionNotFound", f"Revision {revision} not found")
        if name not in self.repos[repo]:
            return self._error(handler, "EntryNotFound", f"{name} does not exist in {repo}")
        content = self.repos[repo][name]
        fault = self.faults.get(name)
        if fault == "garbage":
            content = bytes((b * 7 + 13) % 256 for b in content)  # same length, different bytes
        etag = hashlib.sha256(self.repos[repo][name]).hexdigest()
        start, end = 0, len(content) - 1
        requested = handler.headers.get("Range")
        if requested:
            found = re.match(r"bytes=(\d+)-(\d*)", requested)
            start = int(found.group(1))
            end = int(found.group(2)) if found.group(2) else end
        part = content[start : end + 1]
        handler.send_response(206 if requested else 200)
        handler.send_header("X-Repo-Commit", self.commits[repo])
        handler.send_header("ETag", f'"{etag}"')
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(len(part)))
        if requested:
            handler.send_header("Content-Range", f"bytes {start}-{end}/{len(content)}")
        handler.end_headers()
        if not body:
            return
        cut = fault == "cut_always" or (fault == "cut_once" and name not in self._cut_done)
        if cut and len(part) > 1:
            self._cut_done.add(name)
            handler.wfile.write(part[: len(part) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return
        handler.wfile.write(part)

    def _api(self, handler: http.server.BaseHTTPRequestHandler, repo: str, revision: str) -> None:
        if repo not in self.repos:
            return self._error(handler, "RepoNotFound", f"Repository {repo} not found")
        if revision not in ("main", self.commits[repo]):
            return self._error(handler, "RevisionNotFound", f"Revision {revision} not found")
        payload = json.dumps(
            {
                "id": repo,
                "modelId": repo,
                "sha": self.commits[repo],
                "private": False,
                "disabled": False,
                "gated": False,
                "siblings": [{"rfilename": name} for name in self.repos[repo]],
            }
        ).encode("utf-8")
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        if handler.command == "GET":
            handler.wfile.write(payload)
