"""Retention (SPEC §14): the policy, and one purge of a store by it.

Pure: ``purge`` takes ``now`` from its caller, so a policy of days is tested
in milliseconds. The background loop and the CLI live in the adapters.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from . import jsontext
from .errors import ConfigError
from .protocol import Expiring, Store
from .rows import Query, Stale

RETENTION_SETTING = "JOBSTATUS_RETENTION"
TOMBSTONES_SETTING = "JOBSTATUS_TOMBSTONES"
DEFAULT_TOMBSTONES = 30 * 86400.0
#: The policy's ``*`` rule: any status not named.
OTHER = "*"
UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"([0-9]+)([smhd])")


@dataclass(frozen=True, slots=True)
class Policy:
    """How long jobs of each status live after they were last written.

    ``ages`` maps status names to seconds, None for ``off``; ``other`` is
    the ``*`` rule (None: off). The default policy keeps everything.
    """

    ages: dict[str, float | None] = field(default_factory=dict)
    other: float | None = None

    @property
    def active(self) -> bool:
        """Whether the policy expires anything at all."""
        return self.other is not None or any(
            age is not None for age in self.ages.values()
        )

    def describe(self) -> str:
        """The policy as it is written, ``done=7d,*=off``; ``off`` when off."""
        if not self.active:
            return "off"
        parts = [f"{name}={_shown(age)}" for name, age in self.ages.items()]
        return ",".join([*parts, f"{OTHER}={_shown(self.other)}"])

    def stale_queries(self, now: float, limit: int) -> list[Stale]:
        """What ``Expiring.stale`` is asked for, one query per rule in force."""
        queries = [
            Stale(now - age, frozenset({jsontext.encode(name)}), limit=limit)
            for name, age in self.ages.items()
            if age is not None
        ]
        if self.other is not None:
            named = frozenset(jsontext.encode(name) for name in self.ages)
            queries.append(Stale(now - self.other, None, named, limit))
        return queries


OFF = Policy()


def parse_policy(raw: str) -> Policy:
    """``done=7d,cancelled=7d,failed=30d,*=off``; raises ``ConfigError``."""
    ages: dict[str, float | None] = {}
    other: float | None = None
    seen_other = False
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise ConfigError(
                f"{RETENTION_SETTING}: expected status=age like done=7d, got {part!r}"
            )
        age = _age(RETENTION_SETTING, value, off=True, of=name)
        if name in ages or (name == OTHER and seen_other):
            raise ConfigError(f"{RETENTION_SETTING}: {name} is given twice")
        if name == OTHER:
            other, seen_other = age, True
        else:
            ages[name] = age
    return Policy(ages, other)


def parse_tombstones(raw: str) -> float:
    """``JOBSTATUS_TOMBSTONES``: how long tombstones are kept, e.g. ``30d``."""
    if not raw.strip():
        return DEFAULT_TOMBSTONES
    age = _age(TOMBSTONES_SETTING, raw.strip(), off=False, of=None)
    assert age is not None
    return age


def _age(setting: str, value: str, *, off: bool, of: str | None) -> float | None:
    if off and value == "off":
        return None
    match = _DURATION.fullmatch(value)
    if match is None or int(match[1]) == 0:
        where = "" if of is None else f" for {of}"
        choices = "a whole number > 0 and s, m, h or d" + (", or off" if off else "")
        raise ConfigError(
            f"{setting}: expected an age like 7d{where} ({choices}), got {value!r}"
        )
    return int(match[1]) * UNITS[match[2]]


def _shown(age: float | None) -> str:
    if age is None:
        return "off"
    for unit in ("d", "h", "m"):
        if age % UNITS[unit] == 0:
            return f"{int(age // UNITS[unit])}{unit}"
    return f"{int(age)}s"


@dataclass(frozen=True, slots=True)
class Purged:
    """What one purge removed (or, dry, would remove)."""

    #: Jobs expired, by status (a status that is not a string: its JSON text).
    expired: dict[str, int]
    #: Tombstones dropped because they were older than ``JOBSTATUS_TOMBSTONES``.
    forgotten: int

    @property
    def total(self) -> int:
        return sum(self.expired.values())

    def summary(self) -> str:
        """One line: ``expired 3 (done 2, failed 1), forgot 0 tombstones``."""
        by_status = ", ".join(f"{name} {n}" for name, n in sorted(self.expired.items()))
        detail = f" ({by_status})" if by_status else ""
        return f"expired {self.total}{detail}, forgot {self.forgotten} tombstones"


def purge(
    store: Store,
    policy: Policy,
    *,
    now: float,
    tombstones: float = DEFAULT_TOMBSTONES,
    dry_run: bool = False,
    batch: int = 1000,
    between: Callable[[], None] = lambda: None,
) -> Purged:
    """Apply ``policy`` to ``store`` once, as of ``now``: expire the jobs it
    says are too old, in batches of ``batch``, then forget tombstones older
    than ``tombstones`` seconds. ``dry_run`` counts and removes nothing.

    Safe to run from several processes at once: each job is expired once
    (the store compares versions), and a job written meanwhile stays.
    ``between`` is called after each batch: a purger beside live requests
    gives way there.
    """
    expiring = expiring_store(store)
    expired: Counter[str] = Counter()
    for query in policy.stale_queries(now, batch):
        if dry_run:
            expired.update(_stale_counts(store, query))
            continue
        while True:
            rows = expiring.stale(query)
            if not rows:
                break
            left = expiring.expire(rows, at=now)
            expired.update(_status_name(t.status) for t in left)
            between()
            # Nothing expired: another purger took this batch, or every job of
            # it was written meanwhile; the next purge sees what is left.
            if not left or len(rows) < batch:
                break
    before = now - tombstones
    if dry_run:
        forgotten = _old_tombstones(expiring, before, batch)
    else:
        forgotten = 0
        while True:
            dropped = expiring.forget(before=before, limit=batch)
            forgotten += dropped
            if dropped < batch:
                break
    return Purged(dict(expired), forgotten)


def expiring_store(store: Store) -> Expiring:
    """``store`` as one that expires jobs; else the one-line ``ConfigError``
    that stops ``serve`` and ``purge`` at start."""
    if not isinstance(store, Expiring):
        raise ConfigError(
            f"{RETENTION_SETTING}: the store does not expire jobs"
            " (the file store does with ?expire=delete in its URL)"
        )
    return store


def _stale_counts(store: Store, query: Stale) -> Counter[str]:
    """What ``query`` would expire, by status, from the store's counts: all
    jobs of its statuses less those written at or after ``before``."""
    found: Counter[str] = Counter()
    every = store.counts(query.statuses, None)
    recent = store.counts(query.statuses, query.before)
    for text, n in every.items():
        if text in query.other_than:
            continue
        old = n - recent.get(text, 0)
        if old > 0:
            found[_status_name(text)] += old
    return found


def _old_tombstones(store: Expiring, before: float, batch: int) -> int:
    count = 0
    after = 0
    while True:
        page = store.buried(Query(after=after, limit=batch))
        count += sum(1 for tomb in page if tomb.expired_at < before)
        if len(page) < batch:
            return count
        after = page[-1].position


def _status_name(text: str) -> str:
    value = json.loads(text)
    return value if isinstance(value, str) else text
