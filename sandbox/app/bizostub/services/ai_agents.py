"""ai-agents stand-in: fake text generation and real Temporal agent tasks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
from datetime import timedelta
from typing import Any

import psycopg
from aiohttp import web
from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from .. import temporal
from ..keys import combined_status
from ..logs import describe, log
from ..web import ApiError, Runtime, cached_json, json_response, read_json, rt_of
from ..workflows import ACTIVITY_NAME, TASK_QUEUE, AgentTaskWorkflow

DDL = """
CREATE SCHEMA IF NOT EXISTS ai;
CREATE TABLE IF NOT EXISTS ai.tasks (
    task_id TEXT PRIMARY KEY, agent_type TEXT NOT NULL, payload JSONB NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'processing', result JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(), completed_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS ai.generations (
    id SERIAL PRIMARY KEY, model TEXT NOT NULL, prompt_sha256 TEXT NOT NULL,
    tokens_used INT NOT NULL,
    cost NUMERIC(12,6) NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now());
"""

MODELS = [
    {
        "id": "openai/gpt-4o-mini",
        "provider": "openai",
        "context_window": 128000,
        "cost_per_1k_tokens": 0.0006,
    },
    {
        "id": "openai/gpt-4o",
        "provider": "openai",
        "context_window": 128000,
        "cost_per_1k_tokens": 0.01,
    },
    {
        "id": "anthropic/claude-3-5-sonnet",
        "provider": "anthropic",
        "context_window": 200000,
        "cost_per_1k_tokens": 0.015,
    },
    {
        "id": "openrouter/meta-llama-3.1-70b-instruct",
        "provider": "openrouter",
        "context_window": 131072,
        "cost_per_1k_tokens": 0.0009,
    },
]
DEFAULT_MODEL = MODELS[0]["id"]
AGENT_TYPES = (
    "content_writer",
    "seo_analyzer",
    "lead_scorer",
    "product_researcher",
    "social_media",
    "general",
)
TASK_ID = re.compile(r"^task_[0-9a-f]{32}$")
WORDS = (
    "growth",
    "campaign",
    "audience",
    "brand",
    "conversion",
    "content",
    "strategy",
    "local",
    "search",
    "customers",
    "engagement",
    "insight",
    "value",
    "launch",
    "trusted",
    "results",
)

_STATE: dict[str, Any] = {}  # the activity reaches the pool through this


async def setup_db(conn: psycopg.AsyncConnection[Any]) -> None:
    """Create the ai schema (models are static)."""
    await conn.execute(DDL)


def fake_text(prompt: str, model: str, max_tokens: int) -> str:
    """Deterministic pseudo-text: same prompt and model, same answer."""
    digest = hashlib.sha256(f"{model}\0{prompt}".encode()).digest()
    n = max(1, min(max_tokens, 24 + digest[0] % 40))
    words = [WORDS[digest[i % len(digest)] % len(WORDS)] for i in range(n)]
    subject = " ".join(prompt.split()[:6])
    return f"Draft for '{subject}': " + " ".join(words).capitalize() + "."


async def health_extra(rt: Runtime) -> dict[str, Any]:
    """Temporal reachability and AI provider keys."""
    word = await temporal.ping(rt.extra.get("temporal"))
    if word == "connected" and not rt.extra.get("worker_running"):
        word = "worker_stopped"
    return {"temporal": word, "ai_providers": combined_status(rt.key_statuses())}


@activity.defn(name=ACTIVITY_NAME)
async def run_agent_task(task: dict[str, Any]) -> dict[str, Any]:
    """The agent's work: ~0.6 s of 'thinking', then the result row in PostgreSQL."""
    await asyncio.sleep(0.6)
    payload = task.get("payload") or {}
    text = fake_text(json.dumps(payload, sort_keys=True), task.get("agent_type", "general"), 40)
    result = {
        "agent_type": task.get("agent_type"),
        "summary": text,
        "score": int(hashlib.sha256(text.encode()).hexdigest()[:2], 16) % 101,
        "attempt": activity.info().attempt,
    }
    rt: Runtime = _STATE["rt"]
    await rt.db.execute(
        "INSERT INTO ai.tasks (task_id, agent_type, payload, status, result, completed_at) "
        "VALUES (%s,%s,%s,'completed',%s, now()) ON CONFLICT (task_id) DO UPDATE "
        "SET status = 'completed', result = EXCLUDED.result, completed_at = now()",
        (task["task_id"], task.get("agent_type", ""), json.dumps(payload), json.dumps(result)),
    )
    return result


async def start(rt: Runtime) -> None:
    """Connect to Temporal and run the worker in-process (task queue ai-agents)."""
    _STATE["rt"] = rt
    client = await temporal.connect_loop(rt.settings.temporal_address, rt.extra)
    rt.module_ready.set()
    if client is None:
        return
    while True:
        try:
            worker = Worker(
                client,
                task_queue=TASK_QUEUE,
                workflows=[AgentTaskWorkflow],
                activities=[run_agent_task],
                max_concurrent_activities=20,
            )
            rt.extra["worker"] = worker
            rt.extra["worker_running"] = True
            log("info", "Temporal worker started", task_queue=TASK_QUEUE)
            await worker.run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a worker crash must not kill the service
            rt.extra["worker_running"] = False
            log("warning", "Temporal worker stopped; restarting", reason=describe(exc))
            await asyncio.sleep(2)


async def stop(rt: Runtime) -> None:
    """Shut the worker down cleanly."""
    worker = rt.extra.get("worker")
    if worker is not None:
        try:
            await asyncio.wait_for(worker.shutdown(), 5)
        except Exception:  # noqa: BLE001,S110 - best effort at exit
            pass


def _client(rt: Runtime) -> Client:
    client = rt.extra.get("temporal")
    if client is None:
        raise ApiError(503, "Temporal is not connected", {"temporal": "disconnected"})
    return client


async def generate(request: web.Request) -> web.Response:
    """Deterministic fake completion (no outbound call)."""
    rt = rt_of(request)
    data = await read_json(request)
    problems: dict[str, str] = {}
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        problems["prompt"] = "This field is required."
    elif len(prompt) > 20000:
        problems["prompt"] = "at most 20000 characters"
    model = data.get("model") or DEFAULT_MODEL
    known = {m["id"]: m for m in MODELS}
    if model not in known:
        problems["model"] = f"unknown model; one of {sorted(known)}"
    max_tokens = data.get("max_tokens", 256)
    if (
        not isinstance(max_tokens, int)
        or isinstance(max_tokens, bool)
        or not 1 <= max_tokens <= 4096
    ):
        problems["max_tokens"] = "integer between 1 and 4096"
    if problems:
        raise ApiError(400, "Validation failed", problems)
    text = fake_text(prompt, model, max_tokens)
    tokens = len(prompt.split()) + len(text.split())
    cost = round(tokens / 1000 * known[model]["cost_per_1k_tokens"], 6)
    await rt.db.execute(
        "INSERT INTO ai.generations (model, prompt_sha256, tokens_used, cost) VALUES (%s,%s,%s,%s)",
        (model, hashlib.sha256(prompt.encode()).hexdigest(), tokens, cost),
    )
    return json_response(
        {"generated_text": text, "model_used": model, "tokens_used": tokens, "cost": cost}
    )


async def models(request: web.Request) -> web.Response:
    """Available models (static)."""

    async def build() -> dict[str, Any]:
        return {"models": MODELS, "default": DEFAULT_MODEL}

    return await cached_json(request, "models", build)


async def create_task(request: web.Request) -> web.Response:
    """Start an AgentTaskWorkflow on Temporal; 202 with its id."""
    rt = rt_of(request)
    data = await read_json(request)
    agent_type, payload = data.get("agent_type"), data.get("payload", {})
    problems = {}
    if not isinstance(agent_type, str) or agent_type not in AGENT_TYPES:
        problems["agent_type"] = f"one of {list(AGENT_TYPES)}"
    if not isinstance(payload, dict):
        problems["payload"] = "must be an object"
    if problems:
        raise ApiError(400, "Validation failed", problems)
    client = _client(rt)
    task_id = "task_" + secrets.token_hex(16)
    await rt.db.execute(
        "INSERT INTO ai.tasks (task_id, agent_type, payload) VALUES (%s,%s,%s)",
        (task_id, agent_type, json.dumps(payload)),
    )
    task = {"task_id": task_id, "agent_type": agent_type, "payload": payload}
    try:
        await client.start_workflow(
            AgentTaskWorkflow.run,
            task,
            id=task_id,
            task_queue=TASK_QUEUE,
            rpc_timeout=timedelta(seconds=3),
        )
    except RPCError as exc:
        await rt.db.execute("DELETE FROM ai.tasks WHERE task_id = %s", (task_id,))
        raise ApiError(
            503, "Could not start the workflow on Temporal", {"temporal": describe(exc)}
        ) from exc
    return json_response(
        {
            "task_id": task_id,
            "status": "processing",
            "estimated_time": 2,
            "workflow_id": task_id,
            "task_queue": TASK_QUEUE,
        },
        202,
        {"Location": f"/api/agents/task/{task_id}"},
    )


async def get_task(request: web.Request) -> web.Response:
    """Task status read from Temporal (describe, then result when completed)."""
    rt = rt_of(request)
    task_id = request.match_info["task_id"]
    if not TASK_ID.match(task_id):
        raise ApiError(404, f"Task {task_id} not found", {"task_id": task_id})
    # A deleted task may linger in Temporal's visibility for a moment: our row decides.
    if await rt.db.fetchone("SELECT task_id FROM ai.tasks WHERE task_id = %s", (task_id,)) is None:
        raise ApiError(404, f"Task {task_id} not found", {"task_id": task_id})
    handle = _client(rt).get_workflow_handle(task_id)
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise ApiError(404, f"Task {task_id} not found", {"task_id": task_id}) from exc
        raise ApiError(503, "Temporal unavailable", {"temporal": describe(exc)}) from exc
    body: dict[str, Any] = {"task_id": task_id, "workflow_id": task_id, "run_id": desc.run_id}
    if desc.status == WorkflowExecutionStatus.COMPLETED:
        body["status"] = "completed"
        body["result"] = await handle.result()
    elif desc.status == WorkflowExecutionStatus.RUNNING:
        body["status"] = "processing"
    else:
        body["status"] = "failed"
        body["temporal_status"] = desc.status.name if desc.status else "UNKNOWN"
    return json_response(body)


async def delete_task(request: web.Request) -> web.Response:
    """Forget a task: terminate if running, delete its execution and row."""
    rt = rt_of(request)
    task_id = request.match_info["task_id"]
    if not TASK_ID.match(task_id):
        raise ApiError(404, f"Task {task_id} not found", {"task_id": task_id})
    found = await rt.db.execute("DELETE FROM ai.tasks WHERE task_id = %s", (task_id,)) > 0
    client = _client(rt)
    try:
        await client.workflow_service.delete_workflow_execution(
            DeleteWorkflowExecutionRequest(
                namespace=temporal.NAMESPACE,
                workflow_execution=WorkflowExecution(workflow_id=task_id),
            )
        )
        found = True
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise ApiError(503, "Temporal unavailable", {"temporal": describe(exc)}) from exc
    if not found:
        raise ApiError(404, f"Task {task_id} not found", {"task_id": task_id})
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    """FastAPI-style paths."""
    return [
        web.post("/api/generate", generate),
        web.get("/api/models", models),
        web.post("/api/agents/task", create_task),
        web.get("/api/agents/task/{task_id}", get_task),
        web.delete("/api/agents/task/{task_id}", delete_task),
    ]
