"""`SessionRouter`: Serve routes every step of a session to the model replica that holds its state.

Imported by Ray Serve by path, in each process that holds a handle to the model deployment.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica


class SessionRouter(RequestRouter):
    """Routes every step of a session to the replica that holds it (one router per ingress
    process, which holds all of its sessions, so the map here is complete)."""

    def initialize_state(self, **kwargs: Any) -> None:
        self._pinned: dict[str, ReplicaID] = {}

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        args = pending_request.args if pending_request is not None else None
        request = args[0] if args else None
        session = getattr(request, "session_id", None)
        if session is None or not candidate_replicas:
            return [candidate_replicas]
        by_id = {replica.replica_id: replica for replica in candidate_replicas}
        pinned = self._pinned.get(session)
        if pinned is not None and pinned not in by_id:
            return [candidate_replicas]  # its replica is gone: that one answers "unknown session"
        if pinned is None:
            load = Counter(self._pinned.values())
            pinned = min(by_id, key=lambda rid: (load[rid], random.random()))
        if request.action == "close":
            self._pinned.pop(session, None)
        else:
            self._pinned[session] = pinned
        return [[by_id[pinned]]]
