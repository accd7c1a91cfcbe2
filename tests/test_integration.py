"""Suite 10: cross-service flows through the real services.

- brain routes to each service and answers exactly what the service answers
  directly (same JSON through ``/api/<prefix>/...`` and direct);
- a lead created in crm (Bearer token) is visible through brain;
- coreldove: cart -> order (from the cart) -> Stripe checkout, the order
  visible through brain;
- an ai-agents task runs as a Temporal workflow (202, polled to completed,
  the workflow seen completed in Temporal itself);
- Saleor's GraphQL answers the same through brain as directly.

Records: every record a flow creates carries the run's tag
(``bizosaas-acceptance-<run id>``) and is registered with the ``records``
fixture *before* any further step, so its teardown removes it whatever
happens next: a failed step, an exception, Ctrl-C (pytest runs finalizers on
KeyboardInterrupt). The teardown then verifies each record is gone. At the
start (once per run) and at the end (per worker) a sweep removes what earlier
runs left behind: runs marked finished on this host, and tags older than
``STALE_AFTER_S`` seen anywhere; a run still in progress (a colleague's, a CI
job's) is never touched. A check verifies that no such leftovers remain.

Time bounds: every request is bounded by ``--http-timeout``; the sweep as a
whole by ``SWEEP_ROUNDS`` and a flow's cleanup by ``CLEANUP_ROUNDS`` timeouts
(a route that hangs is not asked again, the rest is reported as not done). A
sweep or cleanup that could not finish fails in the usual shape, naming the
requests.

Flows that write run only where writes are allowed (``--allow-writes`` or the
manifest's ``environments.<env>.allow_writes``); elsewhere they are skipped.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from bizosaas_acceptance.model.api import TAG_PREFIX, ServiceApi
from bizosaas_acceptance.model.manifest import Stack
from bizosaas_acceptance.model.target import Target
from bizosaas_acceptance.outcome import (
    Cause,
    check,
    curl_cmd,
    fail,
    logs_cmd,
    status_cause,
    transport_cause,
    waiting_on,
)
from bizosaas_acceptance.probes.api import ApiCaller, run_tag
from bizosaas_acceptance.probes.http import Reply
from bizosaas_acceptance.probes.infra import rpc_timeout, temporal_call
from bizosaas_acceptance.probes.records import finished_runs
from bizosaas_acceptance.probes.snapshot import shared
from bizosaas_acceptance.secrets import clip

pytestmark = [pytest.mark.integration]

WRITES_SKIP = ("writes not allowed in this environment "
               "(--allow-writes / manifest environments.<env>.allow_writes)")
STALE_AFTER_S = 30 * 60
TASK_TIMEOUT_S = 20.0
SETTLE_S = 5.0
#: The sweep's whole budget, in --http-timeout units: the listing, then the DELETEs.
SWEEP_ROUNDS = 3
#: A flow's whole cleanup budget, in --http-timeout units.
CLEANUP_ROUNDS = 3
CRM, COMMERCE, AI, SALEOR, GATEWAY = ("django-crm", "coreldove-backend", "ai-agents",
                                      "saleor-api", "brain-api")


@pytest.fixture
def writes(target: Target) -> None:
    """Skips a flow that writes unless writes are allowed (asked for first: no Vault needed)."""
    if not target.allow_writes:
        pytest.skip(WRITES_SKIP)


def _need_services(stack: Stack, *keys: str) -> None:
    missing = [k for k in keys if k not in stack.services]
    if missing:
        pytest.skip(f"the stack has no {', '.join(missing)}")


def expect(reply: Reply, status: int | tuple[int, ...], stack: Stack, service: str,
           step: str, body: Any = None) -> Any:
    """The parsed JSON of a step's answer, or a failure naming the step."""
    __tracebackhide__ = True
    wanted = (status,) if isinstance(status, int) else status
    container = stack.services[service].container
    nxt = [curl_cmd(reply.method, reply.url, body, reply.method != "GET"), logs_cmd(container)]
    if not reply.ok:
        cause, why = transport_cause(reply)
        fail(f"[FLOW] {service}: {step}: {reply.method} {reply.url}", expected="an HTTP answer",
             seen=reply.error or "?", cause=cause, why=why,
             next_cmd=[f"docker port {container}"] + nxt)
    if reply.status not in wanted:
        cause, why = status_cause(reply.status)
        fail(f"[FLOW] ({reply.status}) == {'/'.join(map(str, wanted))}: {service}: {step}: "
             f"{reply.method} {reply.url}", expected=f"HTTP {' or '.join(map(str, wanted))}",
             seen=reply.describe(240), cause=cause, why=why, next_cmd=nxt)
    try:
        return reply.json() if reply.body else None
    except ValueError:
        fail(f"[FLOW] {service}: {step}: not JSON", expected="a JSON body",
             seen=reply.describe(), cause=Cause.APP, next_cmd=nxt)


# --------------------------------------------------------------------------- records


@dataclass
class Record:
    service: str
    delete_path: str
    check_path: str | None  # a GET that must answer 404 once the record is gone
    what: str
    settle: bool = False  # wait (bounded) until the GET no longer says "processing"


class Budget:
    """An overall deadline for a series of requests, each within --http-timeout."""

    def __init__(self, http_timeout: float, rounds: float) -> None:
        self.http_timeout = http_timeout
        self.total = http_timeout * rounds
        self.deadline = time.monotonic() + self.total

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def timeout(self) -> float | None:
        """The timeout for the next request; None once too little is left to send one."""
        left = self.left()
        return min(self.http_timeout, left) if left >= 0.5 else None


@dataclass
class Records:
    """What a flow created; removed (newest first) and verified gone at teardown."""

    api: ApiCaller
    items: list[Record] = field(default_factory=list)
    #: Requests of the cleanup that got no answer in time (or were not sent for lack of it).
    hung: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"<records of {self.api.tag}: {len(self.items)}>"

    def add(self, service: str, delete_path: str, what: str,
            check_path: str | None = None, settle: bool = False) -> None:
        self.items.append(Record(service, delete_path, check_path, what, settle))

    def _settle(self, rec: Record, budget: Budget) -> None:
        """A running task's activity would write its row again after a DELETE: let it end."""
        deadline = min(time.monotonic() + SETTLE_S, budget.deadline - budget.http_timeout)
        while time.monotonic() < deadline and rec.check_path:
            reply = self.api.http.request("GET", self.api.url(rec.service, rec.check_path),
                                          timeout=budget.timeout())
            try:
                if reply.status != 200 or reply.json().get("status") != "processing":
                    return
            except (ValueError, AttributeError):
                return
            time.sleep(0.2)

    def remove_all(self) -> list[str]:
        """Remove every record within CLEANUP_ROUNDS timeouts; what went wrong, per record."""
        problems = []
        budget = Budget(self.api.http.timeout, CLEANUP_ROUNDS)
        for rec in reversed(self.items):
            url = self.api.url(rec.service, rec.delete_path)
            if budget.timeout() is None:
                problems.append(f"{rec.what}: DELETE {url} not sent (the cleanup's "
                                f"{budget.total:g}s were spent)")
                self.hung.append(f"DELETE {url}")
                continue
            if rec.settle:
                self._settle(rec, budget)
            reply = self.api.http.request("DELETE", url, headers=self.api.headers(auth=True),
                                          timeout=budget.timeout())
            if not reply.ok or reply.status not in (200, 202, 204, 404):
                problems.append(f"{rec.what}: DELETE {url} -> {reply.describe(120)}")
                if not reply.ok:
                    self.hung.append(f"DELETE {url}")
                continue
            if rec.check_path and budget.timeout() is not None:
                seen = self.api.http.request("GET", self.api.url(rec.service, rec.check_path),
                                             timeout=budget.timeout())
                if seen.status != 404:
                    problems.append(f"{rec.what}: still there after DELETE "
                                    f"(GET {rec.check_path} -> {seen.describe(80)})")
        self.items.clear()
        return problems


@pytest.fixture
def records(api_auth: ApiCaller, stack: Stack) -> Iterator[Records]:
    """Registers created records; removes and verifies them, also after a failure."""
    recs = Records(api_auth)
    try:
        yield recs
    finally:
        problems = recs.remove_all()
        if problems:
            svc = stack.services[CRM] if CRM in stack.services else next(iter(
                stack.services.values()))
            hung = bool(recs.hung)
            fail(f"[CLEANUP] {len(problems)} record(s) of run {api_auth.tag} not removed",
                 expected="every record the flow created deleted and gone (404), within "
                          f"{CLEANUP_ROUNDS} x --http-timeout",
                 seen="; ".join(problems), cause=Cause.SLOW if hung else Cause.APP,
                 why="the DELETE got no answer in time (the route hangs): tagged test data "
                     "stays behind until the next run's sweep" if hung
                 else "a DELETE endpoint failed: tagged test data stays behind",
                 next_cmd=[f"curl -s -X DELETE -H 'Authorization: Bearer $BIZOSAAS_API_TOKEN' "
                           f"'{api_auth.url(CRM, '/api/leads/')}?tag={api_auth.tag}'"
                           if CRM in stack.services else "", logs_cmd(svc.container)])


# --------------------------------------------------------------------------- sweep


def _created(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def leftover_tags(api: ApiCaller, this_run: str, timeout: float | None = None,
                  hung: list[str] | None = None) -> tuple[dict[str, str], str | None]:
    """Tags of other runs that may be removed: finished here, or stale anywhere.

    Returns {tag: reason} and an error text (naming the request) when the lead
    listing is unavailable; a listing that got no answer at all is added to ``hung``.
    """
    tags = {run_tag(r): "run finished" for r in finished_runs()[:50] if r != this_run}
    url = api.url(CRM, "/api/leads/?limit=1000")
    reply = api.http.request("GET", url, timeout=timeout)
    if not reply.ok and hung is not None:
        hung.append(f"GET {url}")
    if not reply.ok or reply.status != 200:
        return tags, f"GET {url} -> {reply.describe(120)}"
    try:
        leads = reply.json().get("results") or []
    except (ValueError, AttributeError):
        return tags, "lead listing is not JSON"
    now = time.time()
    for lead in leads:
        source = str(lead.get("source") or "")
        if not source.startswith(TAG_PREFIX) or source == run_tag(this_run):
            continue
        created = _created(lead.get("created_at"))
        if source in tags or (created is not None and now - created > STALE_AFTER_S):
            tags.setdefault(source, "older than 30 min")
    return tags, None


def sweep(api: ApiCaller, stack: Stack, this_run: str) -> dict[str, Any]:
    """Remove what earlier runs left: leads and orders by tag (bulk DELETE ?tag=).

    Bounded as a whole by SWEEP_ROUNDS timeouts: a route that got no answer is
    not asked again, and what could not be sent in time is reported as such.
    """
    budget = Budget(api.http.timeout, SWEEP_ROUNDS)
    hung: list[str] = []  # requests that got no answer at all
    tags, error = leftover_tags(api, this_run, budget.timeout(), hung)
    removed: dict[str, int] = {}
    failures: list[str] = []
    dead: dict[str, str] = {}  # service -> the request that got no answer
    skipped = 0
    for tag in tags:
        for service, path in ((CRM, "/api/leads/"), (COMMERCE, "/api/orders")):
            if service not in stack.services:
                continue
            url = api.url(service, path) + f"?tag={tag}"
            timeout = budget.timeout()
            if service in dead or timeout is None:
                skipped += 1
                continue
            reply = api.http.request("DELETE", url, headers=api.headers(auth=True),
                                     timeout=timeout)
            if reply.ok and reply.status == 200:
                try:
                    n = int(reply.json()["deleted"])
                except (ValueError, AttributeError, TypeError, KeyError):
                    # No count is no evidence that nothing was there.
                    failures.append(f"DELETE {url} -> {reply.describe(80)} (no 'deleted' "
                                    "count)")
                    continue
                if n:
                    removed[f"{service}:{tag}"] = n
            else:
                failures.append(f"DELETE {url} -> {reply.describe(80)}")
                if not reply.ok:
                    dead[service] = f"DELETE {url}"
                    hung.append(dead[service])
    if skipped:
        failures.append(f"{skipped} DELETE(s) not sent: "
                        + (f"no answer from {', '.join(dead.values())}; " if dead else "")
                        + f"the sweep stops within {budget.total:g}s")
    return {"tags": tags, "removed": removed, "failures": failures, "error": error,
            "hung": hung, "took_s": round(budget.total - budget.left(), 2)}


def sweep_failure(what: str, result: dict[str, Any], stack: Stack, api: ApiCaller) -> None:
    """Fail in the usual shape when a sweep could not list or remove everything."""
    __tracebackhide__ = True
    problems = [p for p in (result["error"], *result["failures"]) if p]
    if not problems:
        return
    hung = bool(result.get("hung"))
    fail(f"[CLEANUP] {what} of earlier runs' records failed",
         expected="lead listing and bulk DELETE ?tag= answering within --http-timeout "
                  f"({api.http.timeout:g}s)",
         seen=clip("; ".join(problems), 600),
         cause=Cause.SLOW if hung else Cause.APP,
         why="the route hangs (a locked table, a stuck worker)" if hung
         else "the listing or a DELETE endpoint failed: tagged test data stays behind",
         next_cmd=[curl_cmd("GET", api.url(CRM, "/api/leads/?limit=1000")),
                   logs_cmd(stack.services[CRM].container)])


@pytest.fixture(scope="module")
def swept(pytestconfig: pytest.Config, stack: Stack, target: Target, run_id: str,
          request: pytest.FixtureRequest) -> Iterator[dict[str, Any] | None]:
    """Sweep at the start (once per run) and again at the end (per worker).

    The start sweep's outcome is judged by ``test_no_leftovers_from_earlier_runs``;
    an end sweep that fails is this module's teardown failure, in the usual shape.
    """
    if not target.allow_writes or CRM not in stack.services:
        yield None
        return
    api = request.getfixturevalue("api")
    api.token = request.getfixturevalue("api_token")
    budget = api.http.timeout * SWEEP_ROUNDS
    with waiting_on("the run's start sweep (in another worker of this run)",
                    cause=Cause.SLOW, budget=budget + api.http.timeout,
                    next_cmd=curl_cmd("GET", api.url(CRM, "/api/leads/?limit=1000"))):
        start = shared(run_id, "integration-sweep-start", lambda: sweep(api, stack, run_id),
                       wait=budget + api.http.timeout)
    yield start
    sweep_failure("end-of-run sweep", sweep(api, stack, run_id), stack, api)


# --------------------------------------------------------------------------- flows


def test_gateway_returns_service_answer(brain_route: tuple[ServiceApi, str, str],
                                        api: ApiCaller, stack: Stack) -> None:
    gateway, prefix, target_key = brain_route
    routed = [e for e in gateway.endpoints if e.method == "GET" and e.via == target_key
              and e.direct and e.has_example]
    if not routed:
        pytest.skip(f"no GET through /api/{prefix} with a direct path documented")
    ep = routed[0]
    through = api.http.request("GET", api.url(gateway.key, api.path(ep)))
    direct = api.http.request("GET", api.url(target_key, ep.direct or ""))
    a = expect(direct, 200, stack, target_key, f"GET {ep.direct} directly")
    b = expect(through, 200, stack, gateway.key, f"GET {ep.path} through {gateway.key}")
    # Two empty answers are equal and prove nothing: the target must say something.
    check(a is not None and a == b,
          f"[ROUTING] {gateway.key} {ep.path} != {target_key} {ep.direct}"
          + (" (both empty)" if a is None and b is None else ""),
          expected=f"the same JSON through /api/{prefix} as from {target_key} directly",
          seen=f"through: {through.describe(140)} | direct: {direct.describe(140)}",
          cause=Cause.CONFIG, why="the gateway routes the prefix to another service or "
          "rewrites the answer", next_cmd=[f"curl -s {through.url}", f"curl -s {direct.url}",
                                           f"curl -s {api.url(gateway.key, '/api/routes')}"])


@pytest.mark.service(CRM)
def test_lead_visible_through_gateway(writes, api_auth: ApiCaller, records: Records, stack: Stack,
                                      target: Target, swept) -> None:
    _need_services(stack, CRM, GATEWAY)
    api = api_auth
    flow = f"{api.tag}-lead-{uuid.uuid4().hex[:8]}"
    body = {"name": "Acceptance Lead (integration)", "email": "flow@bizosaas-acceptance.example",
            "phone": "+1-555-0199", "source": api.tag,
            "notes": f"integration flow {flow}"}
    # Registered before the request: if the run is interrupted while the POST
    # is in flight, the lead exists but its id never reached us; the tag finds it.
    records.add(CRM, f"/api/leads/?tag={flow}", f"leads tagged {flow}")
    reply = api.http.request("POST", api.url(CRM, "/api/leads/"), headers=api.headers(auth=True),
                             json_body=body)
    lead = expect(reply, 201, stack, CRM, "create a lead", body)
    lead_id = lead["id"]
    records.add(CRM, f"/api/leads/{lead_id}/", f"lead {lead_id}", f"/api/leads/{lead_id}/")
    check(lead.get("status") == "new" and lead.get("score") == 0,
          f"[FLOW] {CRM}: new lead {lead_id} status/score", expected="status new, score 0",
          seen=reply.describe(200), cause=Cause.APP, next_cmd=logs_cmd(
              stack.services[CRM].container))
    direct = expect(api.http.request("GET", api.url(CRM, f"/api/leads/{lead_id}/")), 200,
                    stack, CRM, f"read lead {lead_id} directly")
    via = api.http.request("GET", api.url(GATEWAY, f"/api/crm/leads/{lead_id}"))
    through = expect(via, 200, stack, GATEWAY, f"read lead {lead_id} through brain")
    check(direct is not None and through == direct,
          f"[FLOW] lead {lead_id}: brain answer != crm answer",
          expected="the lead exactly as crm stores it", seen=f"brain: {via.describe(160)}",
          cause=Cause.CONFIG, why="brain does not route /api/crm to crm",
          next_cmd=[f"curl -s {via.url}", logs_cmd(stack.services[GATEWAY].container)])
    # A query no other check sends: its cache entry is built after the insert.
    listing = expect(api.http.request("GET", api.url(
        GATEWAY, f"/api/crm/leads?limit=1000&offset=0&_={lead_id}")),
                     200, stack, GATEWAY, "list leads through brain")
    ids = [r.get("id") for r in (listing or {}).get("results", [])]
    check(lead_id in ids, f"[FLOW] lead {lead_id} missing from brain's lead listing",
          expected=f"lead {lead_id} listed through /api/crm/leads",
          seen=f"{len(ids)} leads listed", cause=Cause.REDIS,
          why="a stale cached listing (cache not invalidated after the write)",
          next_cmd=logs_cmd(stack.services[CRM].container))


@pytest.mark.service(COMMERCE)
def test_cart_order_checkout(writes, api_auth: ApiCaller, records: Records, stack: Stack,
                             target: Target, api_spec, swept) -> None:
    _need_services(stack, COMMERCE)
    api = api_auth
    session = f"{api.tag}-flow-cart"
    products = expect(api.http.request("GET", api.url(COMMERCE, "/api/products")), 200, stack,
                      COMMERCE, "list products")
    product = next((p for p in products.get("products", []) if p.get("in_stock")), None)
    if product is None:
        fail(f"[FLOW] {COMMERCE}: no product in stock", expected="a product to buy",
             seen=clip(products, 200), cause=Cause.DATABASE, why="the catalogue is empty",
             next_cmd=curl_cmd("GET", api.url(COMMERCE, "/api/products")))
    body = {"session_id": session, "product_id": product["id"], "quantity": 2}
    # The cart's id is ours, so it is registered before it exists.
    records.add(COMMERCE, f"/api/cart/{session}", f"cart {session}")
    cart = expect(api.http.request("POST", api.url(COMMERCE, "/api/cart"),
                                   headers=api.headers(auth=True), json_body=body),
                  201, stack, COMMERCE, "add to cart", body)
    flow = f"{api.tag}-order-{uuid.uuid4().hex[:8]}"
    order_body = {"session_id": session, "customer_email": "flow@bizosaas-acceptance.example",
                  "notes": flow, "metadata": {"tag": flow}}
    # Registered before the request (see the lead flow): found by its tag even
    # when the answer carrying its id is lost to an interruption.
    records.add(COMMERCE, f"/api/orders?tag={flow}", f"orders tagged {flow}")
    order = expect(api.http.request("POST", api.url(COMMERCE, "/api/orders"),
                                    headers=api.headers(auth=True), json_body=order_body),
                   201, stack, COMMERCE, "order the cart", order_body)
    oid = order["order_id"]
    records.add(COMMERCE, f"/api/orders/{oid}", f"order {oid}", f"/api/orders/{oid}")
    check(order.get("status") == "pending" and abs(float(order.get("total", -1))
                                                   - float(cart.get("total", -2))) < 0.005,
          f"[FLOW] {COMMERCE}: order {oid} total {order.get('total')} vs cart "
          f"{cart.get('total')}", expected="a pending order for the cart's total",
          seen=f"status {order.get('status')!r}, total {order.get('total')}", cause=Cause.APP,
          next_cmd=curl_cmd("GET", api.url(COMMERCE, f"/api/orders/{oid}")))
    pay_body = {"order_id": oid}
    pay_reply = api.http.request("POST", api.url(COMMERCE, "/api/payments/stripe/checkout"),
                                 headers=api.headers(auth=True), json_body=pay_body)
    pay = expect(pay_reply, 200, stack, COMMERCE, "Stripe checkout", pay_body)
    ep = api_spec.services[COMMERCE].endpoint("POST /api/payments/stripe/checkout") \
        if COMMERCE in api_spec.services else None
    problems = api_spec.problems(ep.schema if ep else None, pay)
    check(not problems and pay.get("order_id") == oid,
          f"[FLOW] {COMMERCE}: Stripe checkout for {oid}: {problems[0] if problems else ''}",
          expected="a Stripe test-mode checkout session for the order",
          seen=pay_reply.describe(200), cause=Cause.API_KEY,
          why="Stripe is not configured with a test key (sk_test_...)",
          next_cmd=logs_cmd(stack.services[COMMERCE].container))
    if GATEWAY in stack.services:
        direct = expect(api.http.request("GET", api.url(COMMERCE, f"/api/orders/{oid}")), 200,
                        stack, COMMERCE, f"read order {oid}")
        via = api.http.request("GET", api.url(GATEWAY, f"/api/commerce/orders/{oid}"))
        through = expect(via, 200, stack, GATEWAY, f"read order {oid} through brain")
        check(direct is not None and through == direct,
              f"[FLOW] order {oid}: brain answer != coreldove answer",
              expected="the order exactly as coreldove stores it",
              seen=f"brain: {via.describe(160)}", cause=Cause.CONFIG,
              why="brain does not route /api/commerce to coreldove",
              next_cmd=f"curl -s {via.url}")


@pytest.mark.service(AI)
def test_agent_task_runs_on_temporal(writes, api_auth: ApiCaller, records: Records, stack: Stack,
                                     target: Target, async_runner, swept,
                                     request: pytest.FixtureRequest) -> None:
    _need_services(stack, AI)
    if stack.by_protocol("grpc") is None:
        pytest.skip("the stack has no Temporal service to follow the task through")
    temporal = request.getfixturevalue("temporal")
    api = api_auth
    body = {"agent_type": "lead_scorer", "payload": {"tag": api.tag, "lead": "Acceptance"}}
    created = expect(api.http.request("POST", api.url(AI, "/api/agents/task"),
                                      headers=api.headers(auth=True), json_body=body),
                     202, stack, AI, "start an agent task", body)
    task_id = created["task_id"]
    path = f"/api/agents/task/{task_id}"
    records.add(AI, path, f"task {task_id}", path, settle=True)
    deadline = time.monotonic() + TASK_TIMEOUT_S
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = expect(api.http.request("GET", api.url(AI, path)), 200, stack, AI,
                       f"poll task {task_id}") or {}
        if state.get("status") != "processing":
            break
        time.sleep(0.3)
    check(state.get("status") == "completed",
          f"[FLOW] {AI}: task {task_id} status {state.get('status')!r} after "
          f"{TASK_TIMEOUT_S:g}s", expected=f"completed within {TASK_TIMEOUT_S:g} s",
          seen=clip(state, 240), cause=Cause.TEMPORAL,
          why="the workflow does not run: no worker on the task queue, or Temporal is down",
          next_cmd=[f"temporal workflow describe --workflow-id {task_id} --address "
                    f"{target.address(stack.by_protocol('grpc'))}" if stack.by_protocol('grpc')
                    else "", logs_cmd(stack.services[AI].container)])
    from temporalio.client import WorkflowExecutionStatus

    try:
        desc = temporal_call(
            async_runner, temporal.get_workflow_handle(task_id).describe(
                rpc_timeout=rpc_timeout(target.connect_timeout)),
            f"Temporal DescribeWorkflowExecution {task_id}", target.connect_timeout + 1,
            next_cmd=logs_cmd(stack.services[AI].container))
        status = desc.status
    except Exception as exc:  # noqa: BLE001 - RPC errors vary
        status, desc = None, exc
    check(status == WorkflowExecutionStatus.COMPLETED,
          f"[FLOW] {AI}: Temporal workflow {task_id} "
          f"{getattr(status, 'name', status) or 'not found'}",
          expected=f"workflow {task_id} COMPLETED in Temporal", seen=clip(desc, 200),
          cause=Cause.TEMPORAL, why="the task did not go through Temporal",
          next_cmd=logs_cmd(stack.services[AI].container))
    if GATEWAY in stack.services:
        via = expect(api.http.request("GET", api.url(GATEWAY, f"/api/ai/agents/task/{task_id}")),
                     200, stack, GATEWAY, f"read task {task_id} through brain")
        check(via.get("status") == "completed", f"[FLOW] task {task_id} through brain: "
              f"{via.get('status')!r}", expected="completed through /api/ai",
              seen=clip(via, 200), cause=Cause.CONFIG, next_cmd=logs_cmd(
                  stack.services[GATEWAY].container))


@pytest.mark.service(SALEOR)
def test_saleor_graphql_through_gateway(api_auth: ApiCaller, stack: Stack) -> None:
    _need_services(stack, SALEOR, GATEWAY)
    api = api_auth
    query = {"query": "{ products(first: 5) { totalCount edges { node { id name slug } } } }"}
    direct = expect(api.http.request("POST", api.url(SALEOR, "/graphql/"),
                                     headers=api.headers(), json_body=query),
                    200, stack, SALEOR, "GraphQL products directly", query)
    via_reply = api.http.request("POST", api.url(GATEWAY, "/api/saleor/graphql"),
                                 headers=api.headers(auth=True), json_body=query)
    via = expect(via_reply, 200, stack, GATEWAY, "GraphQL products through brain", query)
    edges = ((direct or {}).get("data") or {}).get("products", {}).get("edges") or []
    check(bool(edges) and via == direct, f"[FLOW] {SALEOR} GraphQL through brain",
          expected="the same products through /api/saleor as from Saleor directly",
          seen=f"direct: {len(edges)} products; brain: {via_reply.describe(160)}",
          cause=Cause.CONFIG, why="brain does not forward GraphQL to Saleor",
          next_cmd=curl_cmd("POST", via_reply.url, query, True))


@pytest.mark.service(CRM)
def test_no_leftovers_from_earlier_runs(writes, api_auth: ApiCaller, stack: Stack, target: Target,
                                        run_id: str, swept) -> None:
    _need_services(stack, CRM)
    if swept is None:
        pytest.skip("no sweep ran")
    sweep_failure("start-of-run sweep", swept, stack, api_auth)
    remaining, error = leftover_tags(api_auth, run_id)
    # A listing or a DELETE that failed now is no evidence that nothing remains.
    sweep_failure("re-check (lead listing)", {"error": error, "failures": []}, stack, api_auth)
    again = sweep(api_auth, stack, run_id) if remaining else {"removed": {}}
    if remaining:
        sweep_failure("second sweep", again, stack, api_auth)
    check(not again["removed"], "[CLEANUP] tagged records of earlier runs remain after the "
          "sweep", expected="no record tagged by a finished or stale run",
          seen=", ".join(f"{k}: {v}" for k, v in again["removed"].items()),
          cause=Cause.APP, why="bulk DELETE ?tag= does not remove everything it matches",
          next_cmd=f"curl -s '{api_auth.url(CRM, '/api/leads/?limit=1000')}' | grep "
                   f"{TAG_PREFIX}")
