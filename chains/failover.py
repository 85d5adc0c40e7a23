"""Several RPC endpoints per chain: health, a circuit breaker, reads with failover, broadcast to all.

Why: one dead RPC endpoint used to stop every transfer of its chain. A family's RPC client
(`evm_rpc.JsonRpcClient`, `bitcoin_rpc.BitcoinRpcClient`, `solana_rpc.SolanaRpc`,
`tron_rpc.TronHttpClient`) now takes one URL or a list and sends each call through an
`EndpointPool`; the adapters above do not change.

Health of one endpoint, in this order:
- wrong chain: it answered another chain identity than the endpoint the adapter verified (EVM
  eth_chainId, Bitcoin getblockchaininfo `chain`, Solana getGenesisHash, TRON block 0's id): never
  used again in this process (a balance or an absence read from another chain is a wrong proof);
- down: `failures_to_open` (3) transport failures in a row open its circuit breaker for
  `cooldown_s`; after that it is half-open: the next probe (or call) is its trial, a success closes
  the breaker, a failure opens it for another cooldown;
- lagging: its head is more than `max_lag` blocks below the best head among the endpoints that
  answer (heads probed in a later round than its own are left out: a probe that is merely older is
  no lag);
- stalled: it is behind another endpoint's head and its own head has not moved for `stall_s`
  (counted from when it was first seen behind, so a slow chain's quiet minutes are not a stall).
An endpoint with a recent transport failure stays healthy (it is not yet "down") but is asked after
the clean ones: a dead endpoint costs one failed call, then the probes' failures open its breaker.

Reads (`EndpointPool.read`) go to the first healthy endpoint in configured order (the first URL is
the primary), then the other healthy ones, then the unhealthy ones: health data orders the
endpoints and never refuses a call. A transport failure (a ChainRpcError the node did not answer
itself: refused, reset, timeout, HTTP error status, a body that is not JSON-RPC) marks the endpoint
and the same call goes to the next one; the last ChainRpcError is raised when none answered. An
error the node answered (NodeRpcError; TRON: NodeApiError) is the node's answer and is raised for
the adapter to classify, except the answers of a node that is merely behind, which are retried on
the next endpoint (each family's `Family.retry_elsewhere`):
- EVM: "header not found", "unknown block", "block not found", "missing trie node" (a block or
  state this node does not have yet, or pruned);
- Bitcoin: RPC_IN_WARMUP (-28: the node is still loading);
- Solana: -32004 (block not available for slot), -32005 (node unhealthy: behind), -32014 (block
  status not yet available), -32016 (minimum context slot not reached);
- TRON: none (its API answers "not found" as `{}`, which is not an error).
Retrying those elsewhere only ever asks a node that is further ahead, so it cannot turn "not there
yet" into a false proof of absence that the lagging node would not have given anyway.

Broadcasts (`EndpointPool.broadcast`: each family client recognises its send method by name) go to
every healthy endpoint at once (all endpoints when none is healthy; the rest too when no healthy one
answered). The answer is the best by `Outcome`: an acceptance (the first to arrive; the others
finish in the background), else an "already known"-type answer (the node has these bytes, or their
nonce is used: the adapter looks the transaction up), else the first refusal in configured order
(raised as the node's error for the adapter to classify), else the ChainRpcError of no answer.

Heads are probed with the family's cheapest head call (EVM eth_blockNumber, Bitcoin getblockcount,
Solana getSlot, TRON getnowblock's number), per endpoint at most every `probe_interval_s`, lazily
(a call that finds the data old starts the probes in background threads and does not wait for
them), and only when the pool has more than one endpoint: one endpoint costs no request beyond the
calls themselves, and its identity is never checked twice. A newly used endpoint of a pool is asked
its chain identity once (after the adapter has verified one endpoint).

`read(..., pinned)`: within `with pool.pinned():` every read of this thread goes to the endpoint
that answered the first one, with no failover (a proof asked as several reads is then never
answered by two nodes at different heights).

Settings (`FailoverSettings`, registry `options`: `rpc_max_lag`, `rpc_stall_s`, `rpc_cooldown_s`):
max_lag per family (EVM 5 blocks: 1 min on Ethereum, and on fast L2s still below the jitter
between providers' heads a probe can see; TRON 5 blocks = 15 s, far below the 19 blocks that
solidify a block, so a TRON endpoint trusted for reads has every solidified block; Bitcoin 2
blocks, 20 min; Solana 50 slots, about 20 s), stall 30 s, cooldown 10 s, 3 failures to open,
probes every 5 s.

State is per process: the pool's locks, health and probe flags are made anew in a forked child
(`os.register_at_fork`). Endpoints are named only by `redact_endpoint` (scheme://host:port), in
logs (structlog logger "paratro.rpc": rpc.endpoint.down / .up / .lagging / .wrong_chain) and in
`health()`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, Generic, TypeVar

from chains.errors import ChainError, ChainRpcError, UnknownChain
from chains.transport import NodeRpcError, redact_endpoint

N = TypeVar("N")  # the client of one endpoint
T = TypeVar("T")

LOGGER = "paratro.rpc"
OPTION_KEYS = ("rpc_max_lag", "rpc_stall_s", "rpc_cooldown_s")
DEFAULT_MAX_LAG = {"evm": 5, "tron": 5, "bitcoin": 2, "solana": 50}
_NEVER = float("-inf")


# -- settings -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FailoverSettings:
    """How a pool judges its endpoints; `chain` names the pool in log lines."""

    max_lag: int = 5
    stall_s: float = 30.0
    cooldown_s: float = 10.0
    failures_to_open: int = 3
    probe_interval_s: float = 5.0
    chain: str = ""

    @classmethod
    def for_family(cls, family: str, options: Mapping[str, Any] | None = None, chain: str = "") -> "FailoverSettings":
        """The defaults of `family` with the registry options `rpc_*` applied; ValueError naming
        the chain and the option for a bad value."""
        options = options or {}
        where = f"chain {chain!r}" if chain else f"{family} chain"
        return cls(
            max_lag=_number(options, "rpc_max_lag", DEFAULT_MAX_LAG.get(family, 5), where, integer=True),
            stall_s=float(_number(options, "rpc_stall_s", cls.stall_s, where)),
            cooldown_s=float(_number(options, "rpc_cooldown_s", cls.cooldown_s, where)),
            chain=chain,
        )


def _number(options: Mapping[str, Any], key: str, default: float, where: str, *, integer: bool = False) -> Any:
    value = options.get(key, default)
    kinds = (int,) if integer else (int, float)
    if not isinstance(value, kinds) or isinstance(value, bool) or not 0 < value <= 86_400:
        kind = "an integer" if integer else "a number of seconds"
        raise ValueError(f"{where}: options.{key} must be {kind} above 0 and at most 86400, got {value!r}")
    return value


def split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the failover options `rpc_*`, every other option): the adapters validate only the latter."""
    mine = {k: v for k, v in options.items() if k in OPTION_KEYS}
    return mine, {k: v for k, v in options.items() if k not in OPTION_KEYS}


def endpoint_urls(urls: str | Sequence[str], chain: str = "") -> tuple[str, ...]:
    """One URL or a sequence of them, as a non-empty tuple of strings (UnknownChain for none, as
    `ChainSpec.rpc_url` says it)."""
    found = (urls,) if isinstance(urls, str) else tuple(urls)
    if not found:
        raise UnknownChain(f"chain {chain!r} has no RPC endpoint configured" if chain else "no RPC endpoint configured")
    if not all(isinstance(url, str) and url for url in found):
        raise ChainError("an RPC client takes one URL or a list of URLs")
    return found


# -- what a family tells the pool -----------------------------------------------------------------

class Outcome(IntEnum):
    """One endpoint's answer to a broadcast, best first."""

    ACCEPTED = 0
    KNOWN = 1  # the node has these bytes already (or their nonce is used): the adapter looks it up
    ANSWERED = 2  # the node refused, or answered an error object
    UNANSWERED = 3  # transport trouble: the node never answered


def node_answered(exc: ChainRpcError) -> bool:
    """True for an error object the node answered (not a transport failure)."""
    return isinstance(exc, NodeRpcError)


def send_outcome(result: Any, exc: ChainRpcError | None) -> Outcome:
    """The default broadcast classification: any result is an acceptance."""
    if exc is None:
        return Outcome.ACCEPTED
    return Outcome.ANSWERED if node_answered(exc) else Outcome.UNANSWERED


@dataclass(frozen=True)
class Family:
    """A chain family's client, as the pool needs to know it."""

    name: str
    head: Callable[[Any], int]  # the cheapest head call on one endpoint's client
    identity: Callable[[Any], Hashable] | None = None  # which chain one endpoint serves
    retry_elsewhere: Callable[[ChainRpcError], bool] = lambda exc: False  # a lagging node's answer
    answered: Callable[[ChainRpcError], bool] = node_answered
    outcome: Callable[[Any, ChainRpcError | None], Outcome] = send_outcome


# -- the pool -------------------------------------------------------------------------------------

@dataclass
class _State:
    """What the pool knows of one endpoint (guarded by the pool's lock)."""

    failures: int = 0
    open_until: float | None = None  # circuit breaker open until (monotonic); None: closed
    head: int | None = None
    head_moved_at: float = _NEVER
    behind_since: float | None = None
    probed_at: float = _NEVER
    probing: bool = False
    probe_round: int = 0  # the round of probes its last probe was sent in
    head_round: int = 0  # the round `head` was probed in
    identity: Hashable | None = None  # verified identity
    wrong: bool = False
    shown: str = "up"  # the status group last logged (a healthy start logs nothing)


_UNPINNED = object()
_HEALTHY = frozenset({"ok", "failing"})
_RANK = {"ok": 0, "failing": 1, "down": 2, "half-open": 2, "lagging": 2, "stalled": 2, "wrong_chain": 3}
_EVENT = {"ok": "up", "failing": "up", "down": "down", "half-open": "down", "lagging": "lagging", "stalled": "lagging",
          "wrong_chain": "wrong_chain"}
_POOLS: "weakref.WeakSet[EndpointPool[Any]]" = weakref.WeakSet()


class EndpointPool(Generic[N]):
    """The endpoints of one chain (one client each) and what is known of their health."""

    def __init__(self, urls: Sequence[str], make: Callable[[str], N], family: Family,
                 settings: FailoverSettings | None = None) -> None:
        self.family = family
        self.settings = settings or FailoverSettings.for_family(family.name)
        self.members: list[N] = [make(url) for url in urls]
        self.names = [redact_endpoint(url) for url in urls]
        self._reset()
        _POOLS.add(self)

    def _reset(self) -> None:
        """Fresh state (also in a forked child: no lock, probe flag or health is inherited)."""
        self._lock = threading.Lock()
        self._states = [_State() for _ in self.members]
        self._reference: Hashable | None = None
        self._local = threading.local()
        self._round = 0

    def __len__(self) -> int:
        return len(self.members)

    # -- reads --------------------------------------------------------------------------------
    def read(self, call: Callable[[N], T], *, identity: Callable[[T], Hashable] | None = None) -> T:
        """`call` on the first endpoint that answers (module docstring). `identity`: this call asks
        which chain the endpoint serves, and its answer (the adapter verifies it) becomes the
        reference every other endpoint must match."""
        pin = getattr(self._local, "pin", _UNPINNED)
        if len(self.members) == 1:
            return self._once(0, call, identity)
        self._probe_if_due()
        order = self._order() if not isinstance(pin, int) else [pin]
        last: ChainRpcError | None = None
        for index in order:
            if not self._identity_ok(index):
                continue
            try:
                result = self._once(index, call, identity)
            except ChainRpcError as exc:
                if isinstance(pin, int) or (self.family.answered(exc) and not self.family.retry_elsewhere(exc)):
                    raise
                last = exc
                continue
            if pin is None:
                self._local.pin = index
            return result
        raise last or ChainRpcError(f"{self._label()}: no endpoint serves the verified chain")

    def _once(self, index: int, call: Callable[[N], T], identity: Callable[[T], Hashable] | None) -> T:
        """One call on one endpoint, its health recorded."""
        try:
            result = call(self.members[index])
        except ChainRpcError as exc:
            self._record(index, answered=self.family.answered(exc))
            raise
        self._record(index, answered=True)
        if identity is not None and len(self.members) > 1:
            self._verified(index, identity(result))
        return result

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """Every read of this thread inside goes to the endpoint that answered the first one."""
        if getattr(self._local, "pin", _UNPINNED) is not _UNPINNED:
            yield  # nested: the outer pin holds
            return
        self._local.pin = None
        try:
            yield
        finally:
            del self._local.pin

    # -- broadcasts ---------------------------------------------------------------------------
    def broadcast(self, send: Callable[[N], T]) -> T:
        """`send` on every healthy endpoint; the best answer (module docstring)."""
        if len(self.members) == 1:
            return self._once(0, send, None)
        self._probe_if_due()
        order = self._order()
        healthy = [i for i in order if self._healthy(i)] or order
        answers = self._send_to(healthy, send)
        if all(outcome is Outcome.UNANSWERED for outcome, *_ in answers):
            answers += self._send_to([i for i in order if i not in healthy], send)
        if not answers:
            raise ChainRpcError(f"{self._label()}: no endpoint serves the verified chain")
        outcome, _, result, exc = min(answers, key=lambda answer: (answer[0], order.index(answer[1])))
        if outcome is Outcome.ANSWERED and any(answer[0] is Outcome.UNANSWERED for answer in answers):
            # A refusal is final only if every endpoint sent to refused: one that never answered
            # may have accepted the bytes (a lost reply), so this is not a refusal yet.
            raise ChainRpcError(f"{self._label()}: broadcast refused by some endpoints while others did not "
                                "answer (they may have accepted it); not a refusal yet")
        if exc is not None:
            raise exc
        return result

    def _send_to(self, targets: list[int], send: Callable[[N], T]) -> list[tuple[Outcome, int, Any, Any]]:
        """Each target's (outcome, index, result, error); returns at the first acceptance."""
        if len(targets) == 1:
            return [self._send_one(targets[0], send)]
        answers: queue.SimpleQueue[tuple[Outcome, int, Any, Any]] = queue.SimpleQueue()
        for index in targets:
            threading.Thread(target=lambda i=index: answers.put(self._send_one(i, send)),
                             name=f"rpc-broadcast-{self.names[index]}", daemon=True).start()
        collected = []
        for _ in targets:
            collected.append(answers.get())
            if collected[-1][0] is Outcome.ACCEPTED:
                break
        return collected

    def _send_one(self, index: int, send: Callable[[N], T]) -> tuple[Outcome, int, Any, Any]:
        try:
            if not self._identity_ok(index):
                raise ChainRpcError(f"{self._label()}: {self.names[index]} does not serve the verified chain")
            result = self._once(index, send, None)
        except ChainRpcError as exc:
            return self.family.outcome(None, exc), index, None, exc
        except Exception as exc:  # noqa: BLE001 - a bug in one sender thread must still answer the waiter
            return Outcome.UNANSWERED, index, None, exc
        return self.family.outcome(result, None), index, result, None

    # -- health -------------------------------------------------------------------------------
    def health(self) -> list[dict[str, Any]]:
        """Per endpoint, in configured order: endpoint (redacted), healthy, status, reason, head,
        failures. status: ok, failing (healthy, with recent transport failures), down, half-open,
        lagging, stalled, wrong_chain."""
        now = time.monotonic()
        rows = []
        with self._lock:
            for index, state in enumerate(self._states):
                status, reason = self._judge(state, now)
                rows.append({"endpoint": self.names[index], "healthy": status in _HEALTHY, "status": status,
                             "reason": reason, "head": state.head, "failures": state.failures})
        return rows

    @property
    def current(self) -> int:
        """The endpoint the next read goes to first (no probe is started)."""
        order = self._order() if len(self.members) > 1 else [0]
        return order[0] if order else 0

    def refresh(self) -> list[dict[str, Any]]:
        """Probe every endpoint now, a single one too, and wait for the answers (asked for
        explicitly: tests, `paratro status`; never on a transfer's path); `health()`."""
        threads = [threading.Thread(target=self._probe, args=(i,), daemon=True) for i in self._claim_probes(force=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return self.health()

    def _order(self) -> list[int]:
        """Endpoints to try, best first: healthy and clean, healthy with a recent failure, the rest."""
        now = time.monotonic()
        with self._lock:
            ranks = {i: _RANK[self._judge(state, now)[0]] for i, state in enumerate(self._states) if not state.wrong}
        return sorted(ranks, key=lambda i: (ranks[i], i))

    def _healthy(self, index: int) -> bool:
        with self._lock:
            return self._judge(self._states[index], time.monotonic())[0] in _HEALTHY

    def _best_head(self, state: _State) -> int | None:
        """The best head `state`'s head is judged against: of the endpoints that answer, among the
        heads probed no later than its own (a head probed after it would make it look behind while
        its own probe is merely older)."""
        heads = [s.head for s in self._states if s.head is not None and not s.wrong and s.open_until is None
                 and s.head_round <= state.head_round]
        return max(heads) if heads else None

    def _judge(self, state: _State, now: float) -> tuple[str, str]:
        """(status, reason in words) of one endpoint; the caller holds the lock."""
        best = self._best_head(state)
        if state.wrong:
            return "wrong_chain", "answered another chain identity than the verified endpoint"
        if state.open_until is not None:
            status = "down" if now < state.open_until else "half-open"
            return status, f"{state.failures} transport failures in a row"
        if best is not None and state.head is not None and best - state.head > self.settings.max_lag:
            return "lagging", f"{best - state.head} blocks behind the best head"
        if state.behind_since is not None and now - max(state.behind_since, state.head_moved_at) > self.settings.stall_s:
            return "stalled", f"head {state.head} behind and unchanged for over {self.settings.stall_s:g} s"
        if state.failures:
            return "failing", f"{state.failures} recent transport failures"
        return "ok", "answers"

    def _record(self, index: int, *, answered: bool) -> None:
        """One call's result: an answer closes the breaker, a transport failure counts toward it."""
        state = self._states[index]
        if answered and state.failures == 0 and state.open_until is None:
            return  # the common case, without the lock
        with self._lock:
            if answered:
                state.failures, state.open_until = 0, None
            else:
                state.failures += 1
                if state.open_until is not None or state.failures >= self.settings.failures_to_open:
                    state.open_until = time.monotonic() + self.settings.cooldown_s
        self._log_changes()

    # -- probes -------------------------------------------------------------------------------
    def _probe_if_due(self) -> None:
        for index in self._claim_probes(force=False):
            threading.Thread(target=self._probe, args=(index,), name=f"rpc-probe-{self.names[index]}",
                             daemon=True).start()

    def _claim_probes(self, *, force: bool) -> list[int]:
        """The endpoints whose head is due for a probe, marked as being probed."""
        now = time.monotonic()
        due = []
        with self._lock:
            self._round += 1
            for index, state in enumerate(self._states):
                if state.wrong or state.probing:
                    continue
                if not force and (now - state.probed_at < self.settings.probe_interval_s
                                  or state.open_until is not None and now < state.open_until):
                    continue
                state.probing, state.probed_at, state.probe_round = True, now, self._round
                due.append(index)
        return due

    def _probe(self, index: int) -> None:
        """Ask one endpoint its head (its identity first, if it was never verified)."""
        try:
            if self._identity_ok(index):
                head = self.family.head(self.members[index])
                self._record(index, answered=True)
                self._saw_head(index, head)
        except ChainRpcError:
            self._record(index, answered=False)  # a node that cannot say its head is no use either
        except Exception as exc:  # noqa: BLE001 - a probe thread must not die; the endpoint counts as failing
            import structlog

            structlog.get_logger(LOGGER).warning("rpc.probe_error", chain=self._label(), endpoint=self.names[index],
                                                 error=type(exc).__name__)
            self._record(index, answered=False)
        finally:
            with self._lock:
                self._states[index].probing = False

    def _saw_head(self, index: int, head: int) -> None:
        now = time.monotonic()
        with self._lock:
            state = self._states[index]
            if state.head != head:
                state.head, state.head_moved_at = head, now
            state.head_round = state.probe_round
            best = self._best_head(state)
            state.behind_since = (state.behind_since or now) if best is not None and head < best else None
            for other in self._states:  # those probed no earlier may now be seen behind (never less)
                if other.head is not None and other.head < head and other.head_round >= state.head_round:
                    other.behind_since = other.behind_since or now
        self._log_changes()

    # -- identity -----------------------------------------------------------------------------
    def _identity_ok(self, index: int) -> bool:
        """False for an endpoint of another chain; asks an unverified one once (when a reference
        exists). Its transport failure counts as a failed call."""
        state = self._states[index]
        if state.wrong:
            return False
        if self._reference is None or state.identity is not None or self.family.identity is None:
            return True
        try:
            served = self.family.identity(self.members[index])
        except ChainRpcError as exc:
            self._record(index, answered=self.family.answered(exc))
            return False
        self._record(index, answered=True)
        return self._verified(index, served)

    def _verified(self, index: int, served: Hashable) -> bool:
        with self._lock:
            if self._reference is None:
                self._reference = served
            state = self._states[index]
            state.identity = served if served == self._reference else None
            state.wrong = served != self._reference
        self._log_changes()
        return not state.wrong

    # -- logs ---------------------------------------------------------------------------------
    def _label(self) -> str:
        return self.settings.chain or self.family.name

    def _log_changes(self) -> None:
        """One log line per endpoint whose status group (up, down, lagging, wrong_chain) changed."""
        now = time.monotonic()
        changes = []
        with self._lock:
            for index, state in enumerate(self._states):
                status, reason = self._judge(state, now)
                if _EVENT[status] != state.shown:
                    state.shown = _EVENT[status]
                    changes.append({"event": f"rpc.endpoint.{state.shown}", "endpoint": self.names[index],
                                    "status": status, "reason": reason, "head": state.head, "failures": state.failures})
        if changes:
            import structlog

            log = structlog.get_logger(LOGGER)
            for change in changes:
                level = {"rpc.endpoint.up": "info", "rpc.endpoint.wrong_chain": "error"}.get(change["event"], "warning")
                getattr(log, level)(change.pop("event"), chain=self._label(), **change)


# -- the clients' common face ---------------------------------------------------------------------

class PooledClient(Generic[N]):
    """A family's RPC client over one or more endpoints (subclasses route the calls to the pool).

    `url` and `endpoint` are those of the endpoint the next read goes to first (`endpoint` is
    redacted). Any other attribute is that endpoint's client's (tests reach into its session)."""

    family: ClassVar[Family]

    def __init__(self, urls: str | Sequence[str], make: Callable[[str], N],
                 settings: FailoverSettings | None = None) -> None:
        found = endpoint_urls(urls, settings.chain if settings else "")
        self.pool: EndpointPool[N] = EndpointPool(found, make, self.family, settings)

    @property
    def url(self) -> str:
        return self.pool.members[self.pool.current].url  # type: ignore[attr-defined, no-any-return]

    @property
    def endpoint(self) -> str:
        return self.pool.names[self.pool.current]

    @property
    def endpoints(self) -> list[str]:
        """Every endpoint, redacted, in configured order."""
        return list(self.pool.names)

    def health(self) -> list[dict[str, Any]]:
        return self.pool.health()

    def refresh(self) -> list[dict[str, Any]]:
        return self.pool.refresh()

    def pinned(self) -> contextlib.AbstractContextManager[None]:
        return self.pool.pinned()

    def __getattr__(self, name: str) -> Any:
        if name == "pool" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.pool.members[self.pool.current], name)


def _after_fork_in_child() -> None:
    for pool in list(_POOLS):
        pool._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
