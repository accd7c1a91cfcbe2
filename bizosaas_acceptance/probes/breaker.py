"""The run's circuit breaker for HTTP targets: one timeout per hung target.

A target that hangs costs one timeout, once, for the whole run (every xdist
worker included); every later request to it fails at once with a message that
points at the first failure::

    not attempted: wagtail-cms did not answer within 5 s at 03:38:05 in
    test_health_status_200[wagtail-cms] (first failure: GET http://127.0.0.1:8002/health/
    -> no response within 5s)

Two scopes, keyed by the service's address (``host:port``):

- **service**: every route of the address. Tripped when the connection is
  refused, times out, or gets something that is not HTTP; when the service's
  health path stays silent for the whole budget; or when a route stays silent
  and the health path then gives no answer within :data:`LIVENESS_S` either.
- **route** ``(address, method, path and query)``: that request only. Tripped
  when it stays silent for the whole budget while the service's health path
  still answers: a locked table hangs the routes that read it, the others (a
  CORS preflight of the same path, a 400 for a bad query) keep answering and
  keep being checked.

A request through a gateway (``/api/<prefix>/...`` routed to an upstream) is
attributed to the upstream: it is refused at once when the upstream is known
to hang (not when it merely refuses connections: the gateway answers for that
at once itself), its silence counts against the upstream, and a documented
gateway path shares its route key with the upstream's own path (``direct``).

Across processes the state lives in the run's private shared directory
(:func:`~bizosaas_acceptance.probes.snapshot.shared_dir`): one small JSON file
per tripped key, written atomically (a temporary file hard-linked into place,
so the first failure wins). Processes re-read the directory only when its
modification time moves, so the check before each request is one ``stat``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from bizosaas_acceptance.model.api import ApiSpec
    from bizosaas_acceptance.model.manifest import Stack
    from bizosaas_acceptance.model.target import Target

#: Budget of the health request that decides whether a service with one silent
#: route is alive (its health path answers in milliseconds when it is).
LIVENESS_S = 2.0

#: Errors that say the address itself is dead, whatever the path.
ADDRESS_DEAD = ("connection refused", "connect timeout", "not HTTP", "host name does not")
#: Errors that say the request stayed silent for the whole budget.
SILENT = ("no response within", "no complete response within")

SERVICE, ROUTE = "service", "route"
#: File name prefix of the markers of slow requests in flight (single flight).
PENDING = "pending-"


def route_of(url_or_path: str) -> str:
    """The route key: the exact path and query of a request (``/api/clients/?limit=5``).

    Exact on purpose: ``/api/clients`` (a redirect), ``/api/clients/?limit=abc``
    (a 400 before any query) and ``/api/clients/`` (the locked listing) behave
    differently, and only a route that itself stayed silent is written off.
    """
    parts = urlsplit(url_or_path)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def current_check() -> str:
    """The check running in this process (``test_x[param]``), from pytest's own marker."""
    cur = os.environ.get("PYTEST_CURRENT_TEST", "")
    if not cur:
        return "a request outside any check"
    return cur.rsplit(" (", 1)[0].split("::", 1)[-1]


def what_failed(error: str, budget: float) -> str:
    """The error as a verb phrase: ``did not answer within 5 s``."""
    if "refused" in error:
        return "refused the connection"
    if "connect timeout" in error:
        return f"did not accept a connection within {budget:g} s"
    if "not HTTP" in error:
        return "answered with something that is not HTTP"
    if "does not resolve" in error:
        return "does not resolve"
    if "no complete response" in error or "no response within" in error:
        return f"did not answer within {budget:g} s"
    return f"failed ({error})"


@dataclass(frozen=True)
class Trip:
    """One tripped key and the first failure that tripped it."""

    scope: str  # SERVICE or ROUTE
    netloc: str
    route: str  # "" for a service
    subject: str  # "wagtail-cms", "django-crm GET /api/clients"
    what: str  # "did not answer within 5 s"
    method: str
    url: str
    error: str
    at: float  # wall clock of the failure
    check: str  # the check (or probe) that saw it first

    @property
    def hung(self) -> bool:
        """Silent (answers never come), as opposed to refused or not HTTP (at once)."""
        return any(k in self.error for k in SILENT)

    def refusal(self, waited_s: float | None = None) -> str:
        """The error of a request refused (or given up) because of this trip."""
        when = time.strftime("%H:%M:%S", time.localtime(self.at))
        lead = "not attempted" if waited_s is None else f"given up after {waited_s:.1f} s"
        return (f"{lead}: {self.subject} {self.what} at {when} in {self.check} "
                f"(first failure: {self.method} {self.url} -> {self.error})")


@dataclass
class Topology:
    """What the breaker knows about the addresses it guards."""

    names: dict[str, str] = field(default_factory=dict)  # netloc -> service key
    health: dict[str, str] = field(default_factory=dict)  # netloc -> health path
    #: gateway netloc -> {"/api/cms": upstream netloc}
    gateways: dict[str, dict[str, str]] = field(default_factory=dict)
    #: (gateway netloc, route) -> (upstream netloc, upstream route), from `direct`
    aliases: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def build(cls, stack: Stack, target: Target, spec: ApiSpec | None) -> Topology:
        topo = cls()
        netloc = {key: urlsplit(target.url(svc)).netloc for key, svc in stack.services.items()}
        for key, svc in stack.services.items():
            topo.names[netloc[key]] = key
            if svc.health_path:
                topo.health[netloc[key]] = svc.health_path
        for sapi in (spec.services.values() if spec else ()):
            gw = netloc.get(sapi.key)
            if gw is None:
                continue
            for prefix, upstream in sapi.routes.items():
                if upstream in netloc:
                    topo.gateways.setdefault(gw, {})[f"/api/{prefix}"] = netloc[upstream]
            for ep in sapi.endpoints:
                if ep.via in netloc and ep.direct and "{" not in ep.path:
                    topo.aliases[(gw, route_of(ep.path))] = (netloc[ep.via],
                                                             route_of(ep.direct))
        return topo

    def name(self, netloc: str) -> str:
        return self.names.get(netloc, netloc)

    def upstream(self, netloc: str, path: str) -> str | None:
        """The upstream address a gateway path is routed to (None: not a routed path)."""
        path = path.split("?", 1)[0]
        for prefix, up in self.gateways.get(netloc, {}).items():
            if path == prefix or path.startswith(prefix + "/"):
                return up
        return None


@dataclass(frozen=True)
class Dest:
    """Where one request goes, as the breaker keys it."""

    netloc: str
    method: str
    path: str  # path and query
    upstream: str | None  # the service behind a gateway path
    key_netloc: str  # the address whose route key this request shares
    key_path: str

    @property
    def route(self) -> str:
        """The route key: ``GET /api/clients/``."""
        return f"{self.method} {self.path}"

    @property
    def key_route(self) -> str:
        return f"{self.method} {self.key_path}"

    @property
    def subject_netloc(self) -> str:
        """The service a silence is blamed on: the upstream for a routed path."""
        return self.upstream or self.netloc


class Breaker:
    """Tripped keys of one run, shared through ``directory`` (None: this process only)."""

    def __init__(self, topology: Topology | None = None, directory: Path | None = None) -> None:
        self.topology = topology or Topology()
        self.directory = directory
        self._trips: dict[tuple[str, str, str], Trip] = {}
        self._lock = threading.Lock()
        self._seen_mtime: int | None = None
        self._answered: dict[str, float] = {}  # netloc -> wall clock of the last answer
        #: (netloc, route) -> (owner token, wall-clock deadline) of a slow request in
        #: flight; ours in _own_pending, every process's (files) in _pending.
        self._own_pending: dict[tuple[str, str], tuple[str, float]] = {}
        self._pending: dict[tuple[str, str], tuple[str, float]] = {}
        if directory is not None:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    @classmethod
    def for_run(cls, run_id: str, stack: Stack, target: Target,
                spec: ApiSpec | None) -> Breaker:
        from bizosaas_acceptance.probes.snapshot import shared_dir

        return cls(Topology.build(stack, target, spec), shared_dir(run_id) / "breaker")

    # ------------------------------------------------------------------ keys

    def where(self, url: str, method: str = "GET") -> Dest:
        netloc, path = urlsplit(url).netloc, route_of(url)
        up = self.topology.upstream(netloc, path)
        key = self.topology.aliases.get((netloc, path), (netloc, path))
        return Dest(netloc, method.upper(), path, up, key[0], key[1])

    @staticmethod
    def _file(scope: str, netloc: str, route: str) -> str:
        digest = hashlib.sha1(f"{netloc} {route}".encode(), usedforsecurity=False).hexdigest()
        return f"{scope}-{digest[:20]}.json"

    # ------------------------------------------------------------------ reading

    def _sync(self) -> None:
        """Load trips other processes wrote since the last look (one stat when none)."""
        if self.directory is None:
            return
        try:
            mtime = os.stat(self.directory).st_mtime_ns
        except OSError:
            return
        # A change within the file system's timestamp tick of the last look
        # would leave the mtime unchanged: look again while it is that fresh.
        fresh = time.time_ns() - mtime < 100_000_000
        if mtime == self._seen_mtime and not fresh:
            return
        self._seen_mtime = mtime
        try:
            names = [n for n in os.listdir(self.directory) if n.endswith(".json")]
        except OSError:
            return
        pending: dict[tuple[str, str], tuple[str, float]] = {}
        for name in names:
            try:
                data = json.loads((self.directory / name).read_text())
                if name.startswith(PENDING):
                    pending[(data["netloc"], data["route"])] = (data["owner"], data["deadline"])
                    continue
                trip = Trip(**data)
            except (OSError, ValueError, TypeError, KeyError):
                continue
            with self._lock:
                self._trips.setdefault((trip.scope, trip.netloc, trip.route), trip)
        with self._lock:
            self._pending = pending

    def blocking(self, where: Dest) -> Trip | None:
        """The trip that refuses a request to ``where``, if any."""
        self._sync()
        with self._lock:
            for key in ((SERVICE, where.netloc, ""),
                        (ROUTE, where.netloc, where.route),
                        (ROUTE, where.key_netloc, where.key_route)):
                trip = self._trips.get(key)
                if trip is not None:
                    return trip
            # Behind a gateway only a *hung* upstream refuses the call: the gateway
            # would wait on it too. One that refuses connections is answered for
            # by the gateway at once (502, or its own 401), so that is still asked.
            trip = self._trips.get((SERVICE, where.upstream or "", ""))
            if trip is not None and trip.hung:
                return trip
        return None

    def trips(self) -> list[Trip]:
        self._sync()
        with self._lock:
            return list(self._trips.values())

    # ------------------------------------------------------------------ writing

    def trip(self, scope: str, netloc: str, route: str, *, subject: str, method: str,
             url: str, error: str, budget: float, check: str | None = None) -> Trip:
        """Record a tripped key (the first failure wins, here and across processes)."""
        new = Trip(scope=scope, netloc=netloc, route=route if scope == ROUTE else "",
                   subject=subject, what=what_failed(error, budget), method=method,
                   url=url, error=error, at=time.time(), check=check or current_check())
        key = (new.scope, new.netloc, new.route)
        with self._lock:
            old = self._trips.get(key)
            if old is not None:
                return old
            self._trips[key] = new
        self._publish(new)
        self._sync()
        with self._lock:
            return self._trips.get(key, new)

    def _publish(self, trip: Trip) -> None:
        if self.directory is None:
            return
        final = self.directory / self._file(trip.scope, trip.netloc, trip.route)
        tmp = self.directory / f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            tmp.write_text(json.dumps(asdict(trip)))
            try:
                os.link(tmp, final)  # atomic, and never replaces an earlier first failure
            except FileExistsError:
                # Someone else's first failure stands: read theirs instead of ours.
                with self._lock:
                    self._trips.pop((trip.scope, trip.netloc, trip.route), None)
                self._seen_mtime = None
            finally:
                tmp.unlink(missing_ok=True)
        except OSError:
            pass  # the run's directory is gone (run ending): this process still knows

    # ------------------------------------------------------------------ single flight

    def slow(self, where: Dest, deadline: float) -> str:
        """Say that a request to ``where``'s route is slow (past the watchdog's
        first look) and in flight until ``deadline`` (wall clock); returns the
        token that :meth:`done` takes. Others wait for its outcome instead of
        piling more requests onto a route that may hang."""
        key = (where.key_netloc, where.key_route)
        token = f"{os.getpid()}.{threading.get_ident()}.{time.monotonic_ns()}"
        with self._lock:
            self._own_pending[key] = (token, deadline)
        if self.directory is not None:
            final = self.directory / f"{PENDING}{self._file(ROUTE, *key)}"
            tmp = self.directory / f".{final.name}.{token}.tmp"
            try:
                tmp.write_text(json.dumps({"netloc": key[0], "route": key[1], "owner": token,
                                           "deadline": deadline}))
                os.replace(tmp, final)
            except OSError:
                pass
        return token

    def done(self, where: Dest, token: str) -> None:
        """The slow request of ``token`` ended (answer, error or trip)."""
        key = (where.key_netloc, where.key_route)
        with self._lock:
            if self._own_pending.get(key, ("",))[0] == token:
                del self._own_pending[key]
        if self.directory is not None:
            final = self.directory / f"{PENDING}{self._file(ROUTE, *key)}"
            try:
                if json.loads(final.read_text()).get("owner") == token:
                    final.unlink()
            except (OSError, ValueError):
                pass

    def pending(self, where: Dest) -> float | None:
        """The deadline of a slow request to ``where``'s route in flight (None: none)."""
        self._sync()
        key = (where.key_netloc, where.key_route)
        now = time.time()
        with self._lock:
            entries = [e for e in (self._own_pending.get(key), self._pending.get(key)) if e]
        live = [deadline for _, deadline in entries if deadline > now]
        return max(live) if live else None

    def answered(self, netloc: str) -> None:
        with self._lock:
            self._answered[netloc] = time.time()

    def last_answer(self, netloc: str) -> float | None:
        with self._lock:
            return self._answered.get(netloc)

    def health_path(self, netloc: str) -> str | None:
        return self.topology.health.get(netloc)

    def is_health(self, where: Dest) -> bool:
        """Whether ``where`` is a GET of its own service's health path."""
        return (where.upstream is None and where.method == "GET"
                and self.topology.health.get(where.netloc) == where.path)

    def dump(self) -> list[dict[str, Any]]:
        """Every trip as data (for reports and self-tests)."""
        return [asdict(t) for t in self.trips()]
