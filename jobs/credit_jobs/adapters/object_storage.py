"""Object storage for `cleanup-storage`: delete stored files by URI, in batches, reporting per-file errors.

Two backends, picked by URI scheme:
- `file:///abs/path` — a local or mounted filesystem (a PersistentVolume, NFS). A file already gone counts as
  deleted. When `CREDITJOBS_STORAGE_FILE_ROOT` is set, paths outside it are refused (a stray row cannot delete
  arbitrary files).
- `s3://bucket/key` — S3 or any S3-compatible store (MinIO, Ceph, moto) through boto3 (`pip install
  'credit-jobs[s3]'`), one `DeleteObjects` call per bucket and 1000 keys; `S3_ENDPOINT_URL` points at a non-AWS
  endpoint, credentials come from boto3's usual chain (env, IRSA, instance profile). Deleting a missing key succeeds.
Deletes are idempotent, so a run that dies between deleting and recording is simply redone by the next run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from credit_jobs.domain.errors import ConfigError

S3_BATCH = 1000


class Storage(Protocol):
    def delete_many(self, uris: list[str]) -> dict[str, str | None]:
        """uri → None when deleted (or already absent), else a one-line error."""


class LocalFileStorage:
    def __init__(self, root: str | None = None) -> None:
        self.root = Path(root).resolve() if root else None

    def delete_many(self, uris: list[str]) -> dict[str, str | None]:
        results: dict[str, str | None] = {}
        for uri in uris:
            path = Path(unquote(urlparse(uri).path)).resolve()
            if self.root is not None and not path.is_relative_to(self.root):
                results[uri] = f"refused: {path} is outside CREDITJOBS_STORAGE_FILE_ROOT={self.root}"
                continue
            try:
                path.unlink(missing_ok=True)
                results[uri] = None
            except OSError as exc:
                results[uri] = f"{type(exc).__name__}: {exc.strerror or exc}"
        return results


class S3Storage:
    def __init__(self, endpoint_url: str | None = None, client: Any = None) -> None:
        if client is None:
            try:
                import boto3
            except ImportError:
                raise ConfigError(
                    "s3:// files need boto3: install 'credit-jobs[s3]' (the container image includes it)"
                ) from None
            client = boto3.client("s3", endpoint_url=endpoint_url or None)
        self.client = client

    def delete_many(self, uris: list[str]) -> dict[str, str | None]:
        by_bucket: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for uri in uris:
            parsed = urlparse(uri)
            by_bucket[parsed.netloc].append((parsed.path.lstrip("/"), uri))
        results: dict[str, str | None] = {}
        for bucket, entries in by_bucket.items():
            for start in range(0, len(entries), S3_BATCH):
                batch = entries[start : start + S3_BATCH]
                uri_of = dict(batch)
                try:
                    reply = self.client.delete_objects(
                        Bucket=bucket, Delete={"Objects": [{"Key": k} for k, _ in batch], "Quiet": True}
                    )
                except Exception as exc:  # botocore's ClientError / EndpointConnectionError: the whole batch
                    reason = str(exc).splitlines()[0]
                    results.update({uri: reason for _, uri in batch})
                    continue
                errors = {e["Key"]: f"{e.get('Code')}: {e.get('Message')}" for e in reply.get("Errors", [])}
                results.update({uri_of[key]: errors.get(key) for key, _ in batch})
        return results


class StorageRouter:
    """Sends each URI to the backend for its scheme; unknown schemes are per-file errors, not crashes."""

    def __init__(self, backends: dict[str, Storage]) -> None:
        self.backends = backends

    def delete_many(self, uris: Iterable[str]) -> dict[str, str | None]:
        by_scheme: dict[str, list[str]] = defaultdict(list)
        for uri in uris:
            by_scheme[urlparse(uri).scheme].append(uri)
        results: dict[str, str | None] = {}
        for scheme, group in by_scheme.items():
            backend = self.backends.get(scheme)
            if backend is None:
                results.update(dict.fromkeys(group, f"unsupported storage scheme {scheme!r}: use file:// or s3://"))
            else:
                results.update(backend.delete_many(group))
        return results


def storage_for(file_root: str | None, s3_endpoint_url: str | None) -> StorageRouter:
    """The backends as configured (CREDITJOBS_STORAGE_FILE_ROOT, S3_ENDPOINT_URL; read by the settings): S3 is
    created lazily, only when an s3:// file is due."""

    class _LazyS3:
        _real: S3Storage | None = None

        def delete_many(self, uris: list[str]) -> dict[str, str | None]:
            if self._real is None:
                self._real = S3Storage(s3_endpoint_url)
            return self._real.delete_many(uris)

    return StorageRouter({"file": LocalFileStorage(file_root), "s3": _LazyS3()})
