"""Ray Serve deployments: `Ingress` (FastAPI, holds the WebSockets) -> `ModelReplica` (the models).

- `ModelReplica` autoscales on ongoing requests; its `step` is a `@serve.batch` method, so the
  steps of many sessions reach the engine together (and its scheduler batches them).
- `SessionRouter` pins each session to one replica for its life: a policy's state (audio buffer,
  committed context) lives in that replica's memory. New sessions go to the replica with the
  fewest pinned sessions. If that replica dies, the session ends with an error.
- Ray is imported only when `serve_on_ray` or `build_app` runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from whisperlivekit.config import Config

if TYPE_CHECKING:
    from ray.serve import Application

    from whisperlivekit.ray_serve.remote import StepRequest, StepResult

logger = logging.getLogger(__name__)

APP_NAME = "wlk"
MAX_BATCH = 32  # session steps per @serve.batch call
BATCH_WAIT_S = 0.005  # how long the first step of a batch waits for others (the engine batches too)
IDLE_SESSION_S = 900.0  # a replica forgets a session unheard of this long (its ingress died)
# Ongoing requests a model replica accepts: every live session has at most one step in flight.
MODEL_MAX_ONGOING = 256
ROUTER = "whisperlivekit.ray_serve.router:SessionRouter"  # Serve imports it by path


class ModelReplica:
    """One engine (the models) and the policies of the sessions pinned here, by session id."""

    def __init__(self, config: Config) -> None:
        from ray import serve

        from whisperlivekit.engine import TranscriptionEngine

        self.engine = TranscriptionEngine(config)
        self.sessions: dict[str, tuple[Any, float]] = {}  # id -> (policy, last step, monotonic)
        self.replica = serve.get_replica_context().replica_id.unique_id

    async def step(self, request: StepRequest) -> StepResult:
        # `_batch` is wrapped in @serve.batch by `build_app`: one request in, one result out.
        return await self._batch(request)  # type: ignore[arg-type]

    async def where(self) -> dict[str, Any]:
        """Which replica and node this is, and how many sessions it holds (for tests and ops)."""
        import ray

        return {"replica": self.replica, "node": ray.get_runtime_context().get_node_id(),
                "sessions": len(self.sessions)}  # fmt: skip

    async def _batch(self, requests: list[StepRequest]) -> list[StepResult]:
        """The steps of many sessions at once (Serve gathers them for up to BATCH_WAIT_S)."""
        self.engine.metrics.observe_batch(len(requests))
        self._forget_idle()
        return list(await asyncio.gather(*(self._one(request) for request in requests)))

    async def _one(self, request: StepRequest) -> StepResult:
        from whisperlivekit.ray_serve.remote import StepResult, words_to_tuples

        started = time.perf_counter()
        try:
            if request.action == "close":
                self.sessions.pop(request.session_id, None)
                return StepResult(replica=self.replica)
            held = self.sessions.get(request.session_id)
            if held is None:
                if not request.fresh:
                    raise LookupError("unknown session: its replica restarted or was scaled down")
                policy = self.engine.new_policy(request.language, request.context)
            else:
                policy = held[0]
            self.sessions[request.session_id] = (policy, time.monotonic())
            for samples, start in request.audio:
                policy.insert_audio(samples, start)
            step = policy.process if request.action == "process" else policy.finish
            output = await self.engine.run(step)
            return StepResult(
                committed=words_to_tuples(output.committed),
                tentative=words_to_tuples(output.tentative),
                buffered_seconds=policy.buffered_seconds,
                detected_language=getattr(policy, "detected_language", None),
                replica=self.replica,
                replica_seconds=time.perf_counter() - started,
            )
        except Exception as error:
            logger.exception("session %s step failed", request.session_id)
            return StepResult(replica=self.replica, error=f"{type(error).__name__}: {error}")

    def _forget_idle(self) -> None:
        cutoff = time.monotonic() - IDLE_SESSION_S
        for session, (_, last) in list(self.sessions.items()):
            if last < cutoff:
                del self.sessions[session]


class IngressBase:
    """The WebSocket side: the plain server's app around an `IngressEngine`."""

    def __init__(self, config: Config, model: Any) -> None:
        from whisperlivekit.ray_serve.remote import IngressEngine

        self.engine = IngressEngine(config, model)

    def __serve_build_asgi_app__(self) -> Any:
        from whisperlivekit.server.app import create_app

        return create_app(self.engine)


def build_app(config: Config) -> Application:
    """The Serve application: ingress + model replicas, sized and autoscaled from `config`."""
    from ray import serve
    from ray.serve.config import RequestRouterConfig

    batched = serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)(ModelReplica._batch)
    model_cls = type("ModelReplica", (ModelReplica,), {"_batch": batched})
    model = serve.deployment(
        model_cls,
        name="ModelReplica",
        max_ongoing_requests=MODEL_MAX_ONGOING,
        autoscaling_config={
            "min_replicas": config.ray_replicas,
            "initial_replicas": config.ray_replicas,
            "max_replicas": config.ray_max_replicas,
            "target_ongoing_requests": config.ray_target_ongoing,
        },
        ray_actor_options={"num_cpus": config.ray_replica_cpus},
        request_router_config=RequestRouterConfig(request_router_class=ROUTER),
        # Scale-down ends the sessions pinned to a replica: give them time to finish first.
        graceful_shutdown_timeout_s=60,
    )
    ingress_cls = serve.ingress()(type("Ingress", (IngressBase,), {}))
    ingress = serve.deployment(
        ingress_cls,
        name="Ingress",
        num_replicas=config.ray_ingress_replicas,
        # Each WebSocket is one ongoing request for its whole life (Serve's default caps it at 5).
        # Headroom past --max-sessions: stream N+1 must reach the app to be refused (1013), not
        # wait in Serve's queue; /health and /metrics need room too.
        max_ongoing_requests=(config.max_sessions or 1000) + 32,
        ray_actor_options={"num_cpus": 0},
    )
    return ingress.bind(config, model.bind(config))


def serve_on_ray(config: Config, *, blocking: bool = True) -> None:
    """`wlk serve --ray`: join (or start) a Ray cluster and run the app on host:port."""
    import os

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    ray.init(address=config.ray_address, ignore_reinit_error=True)
    # No request_timeout_s: it would apply to a whole WebSocket session.
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(build_app(config), name=APP_NAME, route_prefix="/", blocking=blocking)
