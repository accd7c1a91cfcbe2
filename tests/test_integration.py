"""Suite 10: cross-service flows through the real services.

- brain routes to each service and answers exactly what the service answers
  directly (same JSON through ``/api/<prefix>/...`` and direct);
- a lead created in crm (Bearer token) is visible through brain;
- coreldove: cart -> order (from the cart) -> Stripe checkout, the order
  visible through brain;
- an ai-agents task runs as a Temporal workflow (202, polled to completed,
  the workflow seen completed in Temporal itself);
- Saleor's GraphQL answers the same through brain as directly.

Records: every record a flow creates goes through the ``records`` fixture
(``fixtures/api.py``, :mod:`bizosaas_acceptance.probes.records`), like the
api suite's writes: registered *before* the request that creates it (by its
own id when we choose it, else by a tag unique to it that the body carries),
identified from the answer, and removed when the flow ends whatever happened:
a failed step, an exception, Ctrl-C (pytest runs finalizers on
KeyboardInterrupt). Each DELETE's status is checked and the record verified
gone; a record that is not fails the flow, naming it. At session start and end
a sweep removes what earlier runs against this target left behind, by their
journals: runs marked finished, or whose processes are all gone from this host.
A run still in progress (a colleague's, a CI job's) is never touched, whatever
its age, and runs are told apart by their exact id. A check verifies that no
such leftovers remain.

Flows that write run only where writes are allowed (the reference stack,
``--allow-writes=true`` or ``environments.<env>.allow_writes``); elsewhere
they are skipped, saying how to allow them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from bizosaas_acceptance.model.api import ServiceApi
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
)
from bizosaas_acceptance.probes.api import ApiCaller
from bizosaas_acceptance.probes.http import Reply
from bizosaas_acceptance.probes.records import (
    Records,
    RecordsDirError,
    default_dir,
    leftovers,
    sweep,
)
from bizosaas_acceptance.probes.snapshot import shared
from fixtures.api import records_dir_failure

pytestmark = [pytest.mark.integration]

TASK_TIMEOUT_S = 20.0
CRM, COMMERCE, AI, SALEOR, GATEWAY = ("django-crm", "coreldove-backend", "ai-agents",
                                      "saleor-api", "brain-api")


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


# --------------------------------------------------------------------------- sweep


@pytest.fixture(scope="session")
def swept(pytestconfig: pytest.Config, stack: Stack, target: Target, run_id: str,
          request: pytest.FixtureRequest) -> Iterator[dict[str, Any] | None]:
    """Sweep at session start (once per run) and again at the end (per worker)."""
    if not target.allow_writes:
        yield None
        return
    api = request.getfixturevalue("api")
    api.token = request.getfixturevalue("api_token")
    key = target.records_key(stack)

    def run() -> dict[str, Any]:
        return sweep(api.http, api.headers(auth=True), run_id, key)

    try:
        start = shared(run_id, "integration-sweep-start", run)
    except RecordsDirError as exc:
        records_dir_failure(exc)
    yield start
    try:
        run()
    except RecordsDirError:
        pass  # reported at the start


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
    tag = records.new_tag()
    body = {"name": "Acceptance Lead (integration)", "email": "flow@bizosaas-acceptance.example",
            "phone": "+1-555-0199", "source": tag, "notes": f"integration flow {tag}"}
    # Registered before the request: if the run is interrupted while the POST
    # is in flight, the lead exists but its id never reached us; its tag finds it.
    rec = records.register(CRM, f"{CRM}: the lead POST /api/leads/ created (tag {tag})",
                           tag=tag, find=api.url(CRM, f"/api/leads/?tag={tag}"))
    reply = records.create(rec, lambda: api.http.request(
        "POST", api.url(CRM, "/api/leads/"), headers=api.headers(auth=True), json_body=body),
        {"path": "/api/leads/{id}/"}, lambda p: api.url(CRM, p))
    lead = expect(reply, 201, stack, CRM, "create a lead", body)
    lead_id = lead["id"]
    check(lead.get("status") == "new" and lead.get("score") == 0,
          f"[FLOW] {CRM}: new lead {lead_id} status/score", expected="status new, score 0",
          seen=reply.describe(200), cause=Cause.APP, next_cmd=logs_cmd(
              stack.services[CRM].container))
    direct = expect(api.http.request("GET", api.url(CRM, f"/api/leads/{lead_id}/")), 200,
                    stack, CRM, f"read lead {lead_id} directly")
    via = api.http.request("GET", api.url(GATEWAY, f"/api/crm/leads/{lead_id}"))
    through = expect(via, 200, stack, GATEWAY, f"read lead {lead_id} through brain")
    check(through == direct, f"[FLOW] lead {lead_id}: brain answer != crm answer",
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
    session = f"{records.new_tag()}-flow-cart"
    products = expect(api.http.request("GET", api.url(COMMERCE, "/api/products")), 200, stack,
                      COMMERCE, "list products")
    product = next((p for p in products.get("products", []) if p.get("in_stock")), None)
    if product is None:
        fail(f"[FLOW] {COMMERCE}: no product in stock", expected="a product to buy",
             seen=str(products)[:200], cause=Cause.DATABASE, why="the catalogue is empty",
             next_cmd=curl_cmd("GET", api.url(COMMERCE, "/api/products")))
    body = {"session_id": session, "product_id": product["id"], "quantity": 2}
    # The cart's id is ours, so it is registered with its id before it exists.
    cart_url = api.url(COMMERCE, f"/api/cart/{session}")
    cart_rec = records.register(COMMERCE, f"{COMMERCE} cart {session}", delete=cart_url,
                                check=cart_url)
    cart_reply = records.create(cart_rec, lambda: api.http.request(
        "POST", api.url(COMMERCE, "/api/cart"), headers=api.headers(auth=True), json_body=body),
        None, lambda p: api.url(COMMERCE, p))
    cart = expect(cart_reply, 201, stack, COMMERCE, "add to cart", body)
    tag = records.new_tag()
    order_body = {"session_id": session, "customer_email": "flow@bizosaas-acceptance.example",
                  "notes": tag, "metadata": {"tag": tag}}
    # Registered before the request (see the lead flow): found by its tag even
    # when the answer carrying its id is lost to an interruption. Its payments
    # go with it (ON DELETE CASCADE).
    order_rec = records.register(COMMERCE, f"{COMMERCE}: the order POST /api/orders created "
                                 f"(tag {tag})", tag=tag,
                                 find=api.url(COMMERCE, f"/api/orders?tag={tag}"))
    order_reply = records.create(order_rec, lambda: api.http.request(
        "POST", api.url(COMMERCE, "/api/orders"), headers=api.headers(auth=True),
        json_body=order_body), {"path": "/api/orders/{order_id}"},
        lambda p: api.url(COMMERCE, p))
    order = expect(order_reply, 201, stack, COMMERCE, "order the cart", order_body)
    oid = order["order_id"]
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
        check(through == direct, f"[FLOW] order {oid}: brain answer != coreldove answer",
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
    tag = records.new_tag()
    body = {"agent_type": "lead_scorer", "payload": {"tag": tag, "lead": "Acceptance"}}
    rec = records.register(AI, f"{AI}: the task POST /api/agents/task created (tag {tag})",
                           tag=tag, settle=True)
    reply = records.create(rec, lambda: api.http.request(
        "POST", api.url(AI, "/api/agents/task"), headers=api.headers(auth=True), json_body=body),
        {"path": "/api/agents/task/{task_id}"}, lambda p: api.url(AI, p))
    created = expect(reply, 202, stack, AI, "start an agent task", body)
    task_id = created["task_id"]
    path = f"/api/agents/task/{task_id}"
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
          seen=str(state)[:240], cause=Cause.TEMPORAL,
          why="the workflow does not run: no worker on the task queue, or Temporal is down",
          next_cmd=[f"temporal workflow describe --workflow-id {task_id} --address "
                    f"{target.address(stack.by_protocol('grpc'))}" if stack.by_protocol('grpc')
                    else "", logs_cmd(stack.services[AI].container)])
    from temporalio.client import WorkflowExecutionStatus

    try:
        desc = async_runner.run(temporal.get_workflow_handle(task_id).describe(
            rpc_timeout=timedelta(seconds=target.connect_timeout)), target.connect_timeout + 5)
        status = desc.status
    except Exception as exc:  # noqa: BLE001 - RPC errors vary
        status, desc = None, exc
    check(status == WorkflowExecutionStatus.COMPLETED,
          f"[FLOW] {AI}: Temporal workflow {task_id} "
          f"{getattr(status, 'name', status) or 'not found'}",
          expected=f"workflow {task_id} COMPLETED in Temporal", seen=str(desc)[:200],
          cause=Cause.TEMPORAL, why="the task did not go through Temporal",
          next_cmd=logs_cmd(stack.services[AI].container))
    if GATEWAY in stack.services:
        via = expect(api.http.request("GET", api.url(GATEWAY, f"/api/ai/agents/task/{task_id}")),
                     200, stack, GATEWAY, f"read task {task_id} through brain")
        check(via.get("status") == "completed", f"[FLOW] task {task_id} through brain: "
              f"{via.get('status')!r}", expected="completed through /api/ai",
              seen=str(via)[:200], cause=Cause.CONFIG, next_cmd=logs_cmd(
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
def test_no_leftovers_from_earlier_runs(writes, stack: Stack, target: Target, run_id: str,
                                        swept) -> None:
    """What finished or abandoned runs against this target created is gone."""
    _need_services(stack, CRM)
    assert swept is not None
    key = target.records_key(stack)
    nxt = [f"ls -l {default_dir()}",
           logs_cmd(stack.services[CRM].container)]
    if swept["failures"]:
        fail(f"[CLEANUP] sweep: {len(swept['failures'])} record(s) of earlier runs not "
             "removed", expected="every record an earlier run left deleted and gone",
             seen="; ".join(swept["failures"])[:600], cause=Cause.APP,
             why="a DELETE failed or a record cannot be found any more", next_cmd=nxt)
    remaining = leftovers(run_id, key)
    check(not remaining, f"[CLEANUP] {len(remaining)} record(s) of earlier runs remain",
          expected="no open record in the journals of finished or abandoned runs",
          seen="; ".join(remaining)[:600], cause=Cause.APP,
          why="a sweep is still failing on them", next_cmd=nxt)
