"""Pairing: a plugin asks, the server console shows a code, the user types it into the plugin.

The code is the only proof that the person at the plugin can see the server's console, so:

- 8 digits from `secrets`, at most 5 guesses per code, then the code is burned. An online
  guesser wins one code with probability <= 5 / 10**8 = 5e-8, well under the 1e-6 target
  (7 digits would give 5e-7, just under it; the 8th digit buys a 20x margin for one keystroke).
- A pairing's first guess is bounded by the starts (30 an hour in all, below); its later
  guesses are capped globally (20 a minute, 60 an hour). Across codes an attacker gets at most
  720 + 1,440 = 2,160 guesses a day: <= 2.2e-5 chance a day, while every start prints a banner
  on the console, which makes such an attack visible. The first guess is not counted globally so
  that a flood's wrong guesses on its own pairings cannot lock out a code the console showed.
- Codes live `pairing_code_ttl_seconds` (default 300 s) and work once.
- The client name shown on the console is the one the token gets: a complete that names another
  client fails, so the user approves exactly what they saw.

Pairings are kept in memory: a restart cancels them, which is the safe outcome. The attempt
counters are kept on disk (pairing_limits.py): a restart must not reset the limits.

Fair to the person at the console, since pairing has no identity to limit by but the name the
console shows:
- Starts are limited per client name (5 a minute, 15 an hour) before the limits of all starts
  (10 a minute, 30 an hour): a program flooding under one name is refused (429 with
  retry_after) with half of what all starts may use still left for other names. Each plugin
  install pairs under its own name (a random suffix kept in its settings), so a flood under
  the plugin's old fixed name, or any name it can guess, leaves the install's budget alone. A
  flood that changes names still holds up the plugin's new starts once all starts are used (no
  identity tells two local programs apart); the console then says so.
- A pairing that was started is never evicted: it lives its TTL, so a code shown on the console
  keeps working through a flood, and its first guess cannot be refused for flooding.
- A complete naming an unknown or expired pairing is refused without counting, so forged ids
  cannot use up the guesses a real pairing needs.
- When requests are refused for flooding, the console says so (once a minute, with the count
  and the name most refused), since the person there is the one who can tell their own pairing
  from a flood and stop the program behind it.
"""

from __future__ import annotations

import bisect
import hmac
import logging
import math
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from shared_schema.common import Role
from shared_schema.errors import ErrorCode

from .errors import ServiceError
from .pairing_limits import KEEP_SECONDS, AttemptLog
from .tokens import TokenStore, console_safe, utc_now

log = logging.getLogger("dsm.pairing")

CODE_DIGITS = 8
MAX_ATTEMPTS = 5
DEFAULT_TTL_SECONDS = 300.0
# Pairing hands out editor tokens: a paired plugin can read and write entries but not delete
# data stores or manage tokens. Admin is granted deliberately, on the server machine, with
# `dsm tokens role ID admin` - the console is the root of trust, as it is for the code itself.
DEFAULT_PAIRING_ROLE = Role.EDITOR
# (max events, window seconds): generous for people, tight for scripts. Every window is at most
# an hour (the attempt log keeps an hour).
START_LIMITS_PER_NAME: tuple[tuple[int, float], ...] = ((5, 60.0), (15, 3600.0))
START_LIMITS: tuple[tuple[int, float], ...] = ((10, 60.0), (30, 3600.0))
COMPLETE_LIMITS: tuple[tuple[int, float], ...] = ((20, 60.0), (60, 3600.0))
# Bounds memory even if every start is abandoned (starts are rate limited too); pending
# pairings are never evicted to make room.
MAX_PENDING = 50
FLOOD_NOTICE_SECONDS = 60.0
MAX_NAMES_NOTED = 100  # names counted for the flood notice (a flood may change names each time)

Announce = Callable[[str], None]


def announce_on_console(text: str) -> None:
    """Default announcer: a banner on stderr (the console), not the log, which may be a file."""
    bar = "=" * 64
    sys.stderr.write(f"\n{bar}\n{text}\n{bar}\n")
    sys.stderr.flush()


def format_code(code: str) -> str:
    """Show the code in two groups of four; the plugin accepts the digits only."""
    return f"{code[:4]} {code[4:]}"


def describe_ttl(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} min"
    return f"{int(seconds)} s"


class RateLimit:
    """Sliding-window limits shared by every caller (pairing has no identity to limit by).

    With an AttemptLog the counted events are kept on disk (`clock` is then wall-clock
    seconds), so a restart does not hand a flood a fresh allowance.
    """

    def __init__(
        self,
        what: str,
        limits: Sequence[tuple[int, float]],
        clock: Callable[[], float],
        log: AttemptLog | None = None,
    ) -> None:
        self._what = what
        self._limits = tuple(limits)
        self._horizon = max(window for _, window in self._limits)
        if log is not None and self._horizon > KEEP_SECONDS:
            raise ValueError(f"a pairing limit window kept on disk is at most {KEEP_SECONDS} s")
        self._clock = clock
        self._log = log
        self._events: list[float] = [] if log is None else log.load(what, clock() - self._horizon)

    def consume(self) -> None:
        """Count one event, or raise RATE_LIMITED (with Retry-After) without counting it."""
        wait = self.wait()
        if wait > 0:
            raise limited(f"Too many pairing {self._what} attempts", wait)
        self.count()

    def wait(self) -> float:
        """Seconds until one more event fits every window (0: it fits now)."""
        now = self._clock()
        del self._events[: bisect.bisect_right(self._events, now - self._horizon)]
        wait = 0.0
        for limit, window in self._limits:
            recent = self._events[bisect.bisect_right(self._events, now - window) :]
            if len(recent) >= limit:
                # The window frees a slot when the oldest event that keeps it full ages out.
                wait = max(wait, recent[len(recent) - limit] + window - now)
        return wait

    def count(self) -> None:
        now = self._clock()
        self._events.append(now)
        if self._log is not None:
            self._log.record(self._what, now, forget_before=now - self._horizon)

    @property
    def idle(self) -> bool:
        """No event in any window: the limit can be forgotten (its log rows age out)."""
        return not self._events or self._events[-1] <= self._clock() - self._horizon


def limited(what: str, wait: float, limit: str | None = None) -> ServiceError:
    """A 429 whose envelope says when to retry (and the Retry-After header too)."""
    details: dict[str, Any] = {"retry_after_seconds": math.ceil(wait)}
    if limit is not None:
        details["limit"] = limit
    return ServiceError(
        ErrorCode.RATE_LIMITED,
        f"{what}; try again in {math.ceil(wait)} s.",
        retry_after=wait,
        details=details,
    )


@dataclass
class _Pending:
    code: str
    client_name: str
    expires_mono: float
    wrong_attempts: int = 0


@dataclass(frozen=True)
class PairingTicket:
    pairing_id: str
    expires_at: datetime
    code_length: int
    ttl_seconds: float


@dataclass(frozen=True)
class PairingResult:
    token: str
    token_id: str
    role: Role


class PairingService:
    def __init__(
        self,
        tokens: TokenStore,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        role: Role = DEFAULT_PAIRING_ROLE,
        announce: Announce = announce_on_console,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utc_now,
        start_limits: Sequence[tuple[int, float]] = START_LIMITS,
        start_limits_per_name: Sequence[tuple[int, float]] = START_LIMITS_PER_NAME,
        complete_limits: Sequence[tuple[int, float]] = COMPLETE_LIMITS,
        attempts: AttemptLog | None = None,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("pairing_code_ttl_seconds must be positive")
        self._tokens = tokens
        self._ttl = ttl_seconds
        self._role = role
        self._announce = announce
        self._mono = monotonic
        self._now = now
        # Kept on disk, the windows need a clock that survives a restart: the wall clock.
        clock = monotonic if attempts is None else (lambda: now().timestamp())
        self._clock = clock
        self._attempts = attempts
        self._start_limit = RateLimit("start", start_limits, clock, attempts)
        self._per_name_limits = tuple(start_limits_per_name)
        self._name_limits: dict[str, RateLimit] = {}
        self._complete_limit = RateLimit("code", complete_limits, clock, attempts)
        self._pending: dict[str, _Pending] = {}
        self._refused_since_notice = 0
        self._refused_names: Counter[str] = Counter()
        self._last_flood_notice: float | None = None

    @property
    def role(self) -> Role:
        return self._role

    def start(self, client_name: str) -> PairingTicket:
        self._drop_expired()
        self._admit_start(client_name)
        code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
        pairing_id = secrets.token_urlsafe(16)
        self._pending[pairing_id] = _Pending(code, client_name, self._mono() + self._ttl)
        expires_at = self._now() + timedelta(seconds=self._ttl)
        # The name leads the line: it is how the user tells their own code from a flood's (each
        # plugin install pairs under its own name and shows that name on its pairing screen).
        self._announce(
            f"Pairing code for {console_safe(client_name)}: {format_code(code)} "
            f"(expires in {describe_ttl(self._ttl)})\n"
            "Type it into the DataStore Manager Pro plugin only if you started this pairing and "
            "the plugin's pairing screen shows this same name; ignore codes for other names."
        )
        return PairingTicket(pairing_id, expires_at, CODE_DIGITS, self._ttl)

    def complete(self, pairing_id: str, code: str, client_name: str) -> PairingResult:
        # An unknown or expired pairing cannot succeed whatever the code, so it is refused
        # without counting: a flood of forged ids must not use up the guesses that real
        # pairings (the user at the console) need.
        pending = self._pending.get(pairing_id)
        if pending is None:
            raise ServiceError(
                ErrorCode.PAIRING_FAILED,
                "This pairing is unknown, already used or cancelled; start pairing again.",
            )
        if self._mono() >= pending.expires_mono:
            del self._pending[pairing_id]
            raise ServiceError(
                ErrorCode.PAIRING_FAILED, "The pairing code expired; start pairing again."
            )
        if pending.wrong_attempts:  # the first guess was counted with the start
            self._consume(self._complete_limit)
        code_ok = hmac.compare_digest(pending.code.encode(), code.encode())
        if not code_ok or client_name != pending.client_name:
            self._wrong_attempt(pairing_id, pending, code_ok)
        del self._pending[pairing_id]  # single use
        token, info = self._tokens.issue(pending.client_name, self._role)
        log.info("paired %s as token %s (%s)", console_safe(info.name), info.token_id, info.role)
        return PairingResult(token=token, token_id=info.token_id, role=info.role)

    def _wrong_attempt(self, pairing_id: str, pending: _Pending, code_ok: bool) -> NoReturn:
        pending.wrong_attempts += 1
        left = MAX_ATTEMPTS - pending.wrong_attempts
        who = console_safe(pending.client_name)
        log.warning("wrong pairing attempt for %s (%d left)", who, max(left, 0))
        reason = (
            "The client name differs from the one shown with the code"
            if code_ok
            else "Wrong pairing code"
        )
        if left <= 0:
            del self._pending[pairing_id]
            raise ServiceError(
                ErrorCode.PAIRING_FAILED,
                f"{reason}. That was the last of {MAX_ATTEMPTS} attempts: this pairing is "
                "cancelled; start pairing again.",
            )
        raise ServiceError(
            ErrorCode.PAIRING_FAILED,
            f"{reason}; {left} attempt(s) left.",
            details={"attempts_left": left},
        )

    def _admit_start(self, client_name: str) -> None:
        """Count a start under its name and in all, or refuse it (429) counting neither."""
        by_name = self._name_limits.get(client_name) or RateLimit(
            f"start:{client_name}", self._per_name_limits, self._clock, self._attempts
        )
        refusal: ServiceError | None = None
        if (wait := by_name.wait()) > 0:
            refusal = limited(f"Too many pairing starts from {client_name!r}", wait, "client_name")
        elif (wait := self._start_limit.wait()) > 0:
            refusal = limited(
                "Too many pairing starts from programs on this computer", wait, "all_starts"
            )
        elif len(self._pending) >= MAX_PENDING:
            wait = min(p.expires_mono for p in self._pending.values()) - self._mono()
            refusal = limited("Too many pairings are waiting for their code", wait, "waiting")
        if refusal is not None:
            self._note_refusal(refusal.retry_after or 0.0, client_name)
            raise refusal
        by_name.count()
        self._start_limit.count()
        self._name_limits[client_name] = by_name
        for name in [n for n, limit in self._name_limits.items() if limit.idle]:
            del self._name_limits[name]  # memory stays bounded by the starts of the last hour

    def _consume(self, limit: RateLimit) -> None:
        try:
            limit.consume()
        except ServiceError as refused:
            self._note_refusal(refused.retry_after or 0.0)
            raise

    def _note_refusal(self, wait: float, client_name: str | None = None) -> None:
        """Say on the console, at most once a minute, that pairing is being flooded.

        The person at the console is the one who can tell their own pairing from a flood,
        and the one who can stop the program behind it.
        """
        self._refused_since_notice += 1
        if client_name is not None and (
            client_name in self._refused_names or len(self._refused_names) < MAX_NAMES_NOTED
        ):
            self._refused_names[client_name] += 1
        now = self._mono()
        if (
            self._last_flood_notice is not None
            and now - self._last_flood_notice < FLOOD_NOTICE_SECONDS
        ):
            return
        refused, self._refused_since_notice = self._refused_since_notice, 0
        names, self._refused_names = self._refused_names, Counter()
        self._last_flood_notice = now
        log.warning("pairing is being flooded: %d request(s) refused", refused)
        most = ""
        if names:
            name, count = names.most_common(1)[0]
            most = f" ({count} of them starts named {console_safe(name)!r})"
        self._announce(
            f"Pairing is being flooded: {refused} pairing request(s) refused since the last "
            f"notice{most}.\nIf you are not pairing a plugin right now, a program on this "
            "computer is trying to: stop it. Codes shown above that you did not ask for are safe "
            "to ignore; a code you asked for keeps working until it expires.\n"
            f"The refused requests may try again in {math.ceil(wait)} s."
        )

    def _drop_expired(self) -> None:
        now = self._mono()
        for pairing_id in [p for p, v in self._pending.items() if now >= v.expires_mono]:
            del self._pending[pairing_id]


@contextmanager
def open_pairing(
    tokens: TokenStore,
    data_dir: Path,
    *,
    ttl_seconds: float = DEFAULT_TTL_SECONDS,
    role: Role = DEFAULT_PAIRING_ROLE,
    announce: Announce = announce_on_console,
) -> Iterator[PairingService]:
    """The pairing service of one `dsm serve` run, its attempt counters kept in `data_dir`."""
    with closing(AttemptLog.open(data_dir)) as attempts:
        yield PairingService(
            tokens, ttl_seconds=ttl_seconds, role=role, announce=announce, attempts=attempts
        )
