"""What the operator's watches have seen: CreditJobs, CronJobs and child Jobs, so a pass reads memory, not the API.

Kopf already streams every change of these three kinds to `handlers.py`; its event handlers feed this cache
(`observe`), every write the operator makes feeds it with the API server's answer (`KubeApi` calls `store`), and
the periodic resync refreshes all three kinds with one LIST each per watched namespace (`replace`: a deletion a
broken watch never delivered is noticed within one resync). A pass (`reconcile.py`) then needs no request to read
the world, so reads do not grow with the number of CreditJobs. Until `prime` has run (one LIST per kind and
namespace at start-up), the cache is not `ready` and `KubeApi` reads from the API server as before. Thread-safe:
handlers run in Kopf's worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from credit_operator.creditjob import LABEL_CREDITJOB

Key = tuple[str, str]  # (namespace, name)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _key(obj: Mapping[str, Any]) -> Key:
    meta = _meta(obj)
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def is_newer(candidate: Mapping[str, Any], cached: Mapping[str, Any] | None) -> bool:
    """Whether `candidate` may replace `cached`: resourceVersions are compared when both are integers (etcd
    revisions, what real API servers send), so a watch event queued before our own write cannot undo it."""
    if cached is None:
        return True
    new, old = _meta(candidate).get("resourceVersion"), _meta(cached).get("resourceVersion")
    try:
        return int(str(new)) >= int(str(old))
    except ValueError:
        return True  # opaque versions (an emulator's): the latest arrival wins


def _after(obj: Mapping[str, Any], version: str | None) -> bool:
    """Whether `obj` was written after a LIST at `version` (both etcd revisions; False when either is opaque)."""
    try:
        return int(str(_meta(obj).get("resourceVersion"))) > int(str(version))
    except ValueError:
        return False


class WorldCache:
    """CreditJobs and CronJobs by (namespace, name); child Jobs by (namespace, CreditJob name)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, dict[Key, dict[str, Any]]] = {"creditjobs": {}, "cronjobs": {}, "jobs": {}}
        self._jobs_of: dict[Key, set[str]] = {}  # (namespace, CreditJob name) → names of its Jobs
        self._gone: set[tuple[str, Key]] = set()  # deleted before `prime`: its LIST may predate the deletion
        self.ready = threading.Event()

    # Feeding
    def observe(self, kind: str, event_type: str | None, obj: Mapping[str, Any]) -> None:
        """A watch event (ADDED / MODIFIED / DELETED; None for Kopf's initial listing)."""
        if event_type == "DELETED":
            self.forget(kind, *_key(obj))
        else:
            self.store(kind, obj)

    def store(self, kind: str, obj: Mapping[str, Any], *, only_if_absent: bool = False) -> None:
        """An object as the API server last showed it (a watch event, or the answer to our own write)."""
        key = _key(obj)
        if not key[1]:
            return
        with self._lock:
            cached = self._objects[kind].get(key)
            if (only_if_absent and cached is not None) or not is_newer(obj, cached):
                return
            if kind == "jobs":
                self._unlink_job(key)
                owner = str((_meta(obj).get("labels") or {}).get(LABEL_CREDITJOB) or "")
                if not owner:
                    return  # not a child Job (any more): nothing a pass reads
                self._jobs_of.setdefault((key[0], owner), set()).add(key[1])
            self._objects[kind][key] = dict(obj)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            if not self.ready.is_set():
                self._gone.add((kind, (namespace, name)))
            if kind == "jobs":
                self._unlink_job((namespace, name))
            self._objects[kind].pop((namespace, name), None)

    def _unlink_job(self, key: Key) -> None:
        old = self._objects["jobs"].get(key)
        if old is not None:
            owner = str((_meta(old).get("labels") or {}).get(LABEL_CREDITJOB) or "")
            self._jobs_of.get((key[0], owner), set()).discard(key[1])

    def prime(self, kind: str, objects: Iterable[Mapping[str, Any]]) -> None:
        """A start-up LIST: fills what no watch event has delivered yet (an event is never older than it)."""
        for obj in objects:
            if (kind, _key(obj)) not in self._gone:
                self.store(kind, obj, only_if_absent=True)

    def mark_ready(self) -> None:
        """Every kind is primed: from now on a pass reads only the cache."""
        with self._lock:
            self._gone.clear()
        self.ready.set()

    def replace(
        self, kind: str, namespace: str | None, bodies: Iterable[Mapping[str, Any]], version: str | None = None
    ) -> list[Key]:
        """The resync's LIST of one kind and scope (a namespace, or None = all): newer bodies win, and what the cache
        holds but the LIST does not is gone — a DELETED event a broken watch lost (a reconnect, a resume answered
        410 Gone). `version`: the LIST's resourceVersion; an object the cache got after it (its own resourceVersion
        is newer) was created during the LIST and stays. Returns the keys dropped."""
        listed = {_key(body): body for body in bodies}
        for body in listed.values():
            self.store(kind, body)
        dropped: list[Key] = []
        with self._lock:
            table = self._objects[kind]
            for key in [k for k in table if (namespace is None or k[0] == namespace) and k not in listed]:
                if _after(table[key], version):
                    continue  # written after the LIST's snapshot: not a deletion we missed
                if kind == "jobs":
                    self._unlink_job(key)
                del table[key]
                dropped.append(key)
        return dropped

    # Reading (copies are not needed: passes only read these dicts and build new ones)
    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objects[kind].get((namespace, name))

    def jobs_of(self, namespace: str, creditjob: str) -> list[dict[str, Any]]:
        with self._lock:
            names = sorted(self._jobs_of.get((namespace, creditjob), ()))
            return [self._objects["jobs"][(namespace, n)] for n in names if (namespace, n) in self._objects["jobs"]]

    def creditjob_keys(self, namespace: str | None = None) -> list[Key]:
        with self._lock:
            return sorted(k for k in self._objects["creditjobs"] if namespace is None or k[0] == namespace)
