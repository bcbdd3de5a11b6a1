"""A Hugging Face Hub test double on loopback: the endpoints huggingface_hub's client calls, kept in memory.

`FakeHub()` starts two stdlib HTTP servers on 127.0.0.1: the Hub itself and a "CDN" on another port. Large
files (safetensors) are served the way the real Hub serves LFS files: `HEAD /resolve/...` answers 302 with
`X-Linked-Etag` / `X-Linked-Size` / `X-Repo-Commit` and a `Location` on the CDN, which the client does not
follow for metadata (a different origin) and downloads from. Other files answer 200 with `ETag`.

Endpoints: repo creation, branches, tags, refs, model info (per revision), tree listing, preupload, commit
(NDJSON; every file is taken as "regular", base64 in the commit, so no LFS or Xet upload endpoints are needed:
what this double does not exercise is the client's LFS/Xet upload path, which the real Hub uses for large
files), YAML validation, resolve, CDN download. Errors carry the `X-Error-Code` headers
(`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) that the client turns into its typed exceptions.

Every request is recorded in `FakeHub.requests` as (method, path), so a test can check what the client did.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin")
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


class HubError(Exception):
    """An error reply: status, the X-Error-Code the client dispatches on, and a message."""

    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Commit:
    sha: str
    parent: str | None
    message: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit:
        """A branch, a tag, or a full commit sha; RevisionNotFound otherwise."""
        sha = self.branches.get(revision) or self.tags.get(revision)
        if sha is None and revision in self.commits:
            sha = revision
        if sha is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return self.commits[sha]

    def add_commit(self, branch: str, message: str, files: dict[str, bytes]) -> Commit:
        parent = self.branches.get(branch)
        digest = hashlib.sha1(f"{parent}\n{message}\n".encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + hashlib.sha1(files[path]).digest())
        commit = Commit(digest.hexdigest(), parent, message, dict(files))
        self.commits[commit.sha] = commit
        self.branches[branch] = commit.sha
        return commit


def git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class FakeHub:
    """The in-memory Hub and its two loopback servers. Use as a context manager, or call `close()`."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}  # sha256 -> content, served by the CDN
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server = _serve(self, _HubHandler)
        self.cdn = _serve(self, _CdnHandler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.cdn_endpoint = f"http://127.0.0.1:{self.cdn.server_address[1]}"

    def __enter__(self) -> FakeHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for server in (self.server, self.cdn):
            server.shutdown()
            server.server_close()

    def repo(self, repo_id: str) -> Repo:
        if repo_id not in self.repos:
            raise HubError(404, "RepoNotFound", f"Repository Not Found for url: {repo_id}")
        return self.repos[repo_id]

    def create_repo(self, repo_id: str, private: bool = False) -> Repo:
        repo = Repo(repo_id, private)
        repo.add_commit("main", "initial commit", {".gitattributes": GITATTRIBUTES})
        self.repos[repo_id] = repo
        return repo

    def files_at(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of a repo at a revision (for assertions)."""
        return self.repo(repo_id).resolve(revision).files

    def count(self, method: str, path_part: str) -> int:
        """How many recorded requests had this method and a path containing `path_part`."""
        return sum(1 for m, path in self.requests if m == method and path_part in path)


def _serve(hub: FakeHub, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.hub = hub  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def hub(self) -> FakeHub:
        return self.server.hub  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass  # keep pytest output clean; FakeHub.requests is the log

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value: Any, status: int = 200) -> None:
        self._reply(status, json.dumps(value).encode(), {"Content-Type": "application/json"})

    def _handle(self) -> None:
        self._body_bytes = self._body()
        path = urlsplit(self.path).path
        with self.hub.lock:
            self.hub.requests.append((self.command, path))
            try:
                self.route(path)
            except HubError as error:
                headers = {"X-Error-Message": error.message, "Content-Type": "application/json"}
                if error.code:
                    headers["X-Error-Code"] = error.code
                self._reply(error.status, json.dumps({"error": error.message}).encode(), headers)

    do_GET = do_HEAD = do_POST = do_PUT = _handle

    def route(self, path: str) -> None:
        raise NotImplementedError


class _CdnHandler(_Handler):
    """Serves blob content by sha256, as the real Hub's storage behind its redirects does."""

    def route(self, path: str) -> None:
        sha256 = path.rsplit("/", 1)[-1]
        if sha256 not in self.hub.blobs:
            raise HubError(404, None, "no such blob")
        self._reply(200, self.hub.blobs[sha256], {"ETag": f'"{sha256}"'})


class _HubHandler(_Handler):
    def route(self, path: str) -> None:
        parts = [unquote(part) for part in path.strip("/").split("/")]
        if parts[:3] == ["api", "repos", "create"]:
            return self.create_repo()
        if parts[:2] == ["api", "validate-yaml"]:
            return self._json({"errors": [], "warnings": []})
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            return self.api(f"{parts[2]}/{parts[3]}", parts[4:])
        if len(parts) >= 5 and parts[2] == "resolve":
            return self.resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        raise HubError(404, None, f"no route for {self.command} {path}")

    # -------------------------------------------------------------------------------------- /api/models

    def api(self, repo_id: str, rest: list[str]) -> None:
        repo = self.hub.repo(repo_id)
        action = rest[0] if rest else "revision"
        if action == "revision":
            return self._json(self.model_info(repo, rest[1] if len(rest) > 1 else "main"))
        if action == "tree":
            return self.tree(repo, rest[1], "/".join(rest[2:]))
        if action == "refs":
            return self._json(self.refs(repo))
        if action == "preupload":
            files = json.loads(self._body_bytes)["files"]
            repo.resolve(rest[1])
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            return self._json({"files": modes, "commitOid": repo.branches.get(rest[1])})
        if action == "commit":
            return self.commit(repo, rest[1])
        if action == "branch":
            return self.create_branch(repo, rest[1])
        if action == "tag":
            return self.create_tag(repo, rest[1])
        raise HubError(404, None, f"no route for {action}")

    def create_repo(self) -> None:
        payload = json.loads(self._body_bytes)
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        url = f"{self.hub.endpoint}/{repo_id}"
        if repo_id in self.hub.repos:
            return self._json({"error": "You already created this model repo", "url": url}, 409)
        self.hub.create_repo(repo_id, private=payload.get("visibility") == "private")
        self._json({"url": url, "name": repo_id})

    def model_info(self, repo: Repo, revision: str) -> dict[str, Any]:
        commit = repo.resolve(revision)
        return {
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "sha": commit.sha,
            "private": repo.private,
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
            "tags": [],
        }

    def tree(self, repo: Repo, revision: str, prefix: str) -> None:
        commit = repo.resolve(revision)
        entries = []
        for path, content in sorted(commit.files.items()):
            if prefix and not path.startswith(prefix.rstrip("/") + "/"):
                continue
            entry: dict[str, Any] = {"type": "file", "oid": git_blob_oid(content), "size": len(content), "path": path}
            if path.endswith(LFS_SUFFIXES):
                sha256 = hashlib.sha256(content).hexdigest()
                entry["lfs"] = {"oid": sha256, "size": len(content), "pointerSize": 130}
            entries.append(entry)
        self._json(entries)

    def refs(self, repo: Repo) -> dict[str, Any]:
        def ref(kind: str, name: str, sha: str) -> dict[str, str]:
            return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}

        return {
            "branches": [ref("heads", name, sha) for name, sha in sorted(repo.branches.items())],
            "tags": [ref("tags", name, sha) for name, sha in sorted(repo.tags.items())],
            "converts": [],
        }

    def commit(self, repo: Repo, branch: str) -> None:
        if branch not in repo.branches:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {branch}")
        files = dict(repo.resolve(branch).files)
        lines = [json.loads(line) for line in self._body_bytes.decode().splitlines() if line.strip()]
        header = lines[0]["value"]
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {p: c for p, c in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:
                raise HubError(400, None, f"the fake Hub takes regular files only, not {key!r}")
        commit = repo.add_commit(branch, header["summary"], files)
        url = f"{self.hub.endpoint}/{repo.repo_id}/commit/{commit.sha}"
        self._json({"commitUrl": url, "commitOid": commit.sha, "pullRequestUrl": None})

    def create_branch(self, repo: Repo, branch: str) -> None:
        if branch in repo.branches:
            raise HubError(409, None, f"branch {branch} already exists")
        start = json.loads(self._body_bytes or b"{}").get("startingPoint") or "main"
        repo.branches[branch] = repo.resolve(start).sha
        self._json({})

    def create_tag(self, repo: Repo, revision: str) -> None:
        tag = json.loads(self._body_bytes)["tag"]
        if tag in repo.tags:
            raise HubError(409, None, f"tag {tag} already exists")
        repo.tags[tag] = repo.resolve(revision).sha
        self._json({})

    # -------------------------------------------------------------------------------------- /resolve

    def resolve(self, repo_id: str, revision: str, filename: str) -> None:
        commit = self.hub.repo(repo_id).resolve(revision)
        if filename not in commit.files:
            raise HubError(404, "EntryNotFound", f"Entry not found: {filename}")
        content = commit.files[filename]
        if filename.endswith(LFS_SUFFIXES):
            sha256 = hashlib.sha256(content).hexdigest()
            self.hub.blobs[sha256] = content
            headers = {
                "Location": f"{self.hub.cdn_endpoint}/blobs/{sha256}",
                "X-Linked-Etag": f'"{sha256}"',
                "X-Linked-Size": str(len(content)),
                "X-Repo-Commit": commit.sha,
                "ETag": f'"{git_blob_oid(content)}"',
            }
            return self._reply(302, b"", headers)
        headers = {"ETag": f'"{git_blob_oid(content)}"', "X-Repo-Commit": commit.sha}
        self._reply(200, content, headers)


@contextmanager
def serving(monkeypatch: Any, cache_dir: Path) -> Iterator[FakeHub]:
    """A FakeHub that huggingface_hub (and so transformers) in this process talks to, with its own cache.

    huggingface_hub reads HF_ENDPOINT, HF_HUB_OFFLINE and HF_HUB_CACHE once, at import (conftest.py has
    imported it with HF_HUB_OFFLINE=1), so the module's constants are patched for the duration instead, and
    transformers' shared `HfApi` (created once, with the endpoint of that moment) is reset.
    """
    import transformers.utils.hub
    from huggingface_hub import constants

    with FakeHub() as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))
        monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)
        yield hub
