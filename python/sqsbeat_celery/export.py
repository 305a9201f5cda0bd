"""``export-schedule``: a Celery app's ``beat_schedule`` as a sqsbeat schedule file.

Each ``beat_schedule`` entry becomes one ``[entries.NAME]`` table: a
``crontab()`` becomes a ``crontab`` table with Celery's meaning kept (every
field must match, Sunday is 0), a number, ``timedelta`` or
``schedule(run_every=...)`` becomes ``every``, the app's ``timezone`` the
file's ``[defaults] timezone``, and ``options`` become fields. An entry that
cannot be carried over faithfully (solar, ``relative=True``, arguments that
are not JSON, an option sqsbeat has no field for, ...) is left out whole and
reported, so that nothing fires differently without saying so.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from celery.schedules import crontab, schedule, solar

#: Header names Celery's protocol (or sqsbeat) owns; sqsbeat refuses them.
RESERVED_HEADERS = frozenset("""lang task id shadow eta expires group group_index retries timelimit
root_id parent_id argsrepr kwargsrepr origin ignore_result replaced_task_nesting stamped_headers
stamps celery_beat_task periodic_task_name sqsbeat_scheduled_at sqsbeat_intake""".split())

#: beat_schedule entry keys Celery's ScheduleEntry takes; the last two are
#: run state, not configuration.
_ENTRY_KEYS = {"task", "schedule", "args", "kwargs", "options", "relative",
               "last_run_at", "total_run_count"}

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_I64 = (-(2 ** 63), 2 ** 63 - 1)

#: Celery's crontab fields: (name, lowest, highest, names accepted).
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_FIELDS = [
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day_of_week", 0, 6, {n: i for i, n in enumerate(_DAYS)}),
    ("day_of_month", 1, 31, None),
    ("month_of_year", 1, 12, {n: i + 1 for i, n in enumerate(_MONTHS)}),
]
_PART = re.compile(r"^(?:(\*)|([A-Za-z0-9]+)(?:-([A-Za-z0-9]+))?)(?:/(\d+))?$")


class Unconvertible(Exception):
    """Why one entry (or one of its values) has no sqsbeat form."""


@dataclass
class Export:
    """The file text and what could not be exported."""

    toml: str
    exported: list[str] = field(default_factory=list)
    #: (entry name or None for the file, reason)
    problems: list[tuple[str | None, str]] = field(default_factory=list)


def export_schedule(app, source: str = "") -> Export:
    """Converts ``app.conf.beat_schedule``; never raises for a bad entry."""
    out = Export(toml="")
    beat = app.conf.beat_schedule or {}
    lines = ["# sqsbeat schedule exported from Celery's beat_schedule"
             + (f" of {source}" if source else "") + ".",
             "# crontab tables keep Celery's crontab() meaning; `every` counts from the Unix",
             "# epoch instead of from the previous run (see README \"Coming from Celery beat\")."]
    tz = _timezone(app, out)
    if tz:
        lines += ["", "[defaults]", f"timezone = {_toml(tz)}"]
    if not beat:
        out.problems.append((None, "beat_schedule is empty: nothing to export"))
    for name, entry in beat.items():
        try:
            body = _entry(entry)
        except Unconvertible as e:
            for reason in e.args[0] if isinstance(e.args[0], list) else [str(e)]:
                out.problems.append((name, reason))
            continue
        lines += ["", f"[entries.{_key(str(name))}]"]
        lines += [f"{k} = {v}" for k, v in body]
        out.exported.append(name)
    out.toml = "\n".join(lines) + "\n"
    return out


def _timezone(app, out):
    tz = app.conf.timezone
    if tz is None:
        if app.conf.enable_utc:
            return "UTC"
        out.problems.append((None, "timezone is unset and enable_utc is False, so Celery uses this "
                                   "host's local time; set the app's timezone to an IANA name "
                                   "(the entries are exported without one, i.e. in UTC)"))
        return None
    if isinstance(tz, str):
        return tz
    name = getattr(tz, "key", None) or getattr(tz, "zone", None)
    if name:
        return name
    out.problems.append((None, f"timezone {tz!r} has no IANA name; set the app's timezone to one "
                               "(the entries are exported without one, i.e. in UTC)"))
    return None


def _entry(entry):
    """The entry's (key, TOML value) lines; raises Unconvertible with every problem."""
    problems = []
    if not isinstance(entry, dict):
        raise Unconvertible([f"is a {type(entry).__name__}, not a dict"])
    for key in sorted(set(entry) - _ENTRY_KEYS, key=str):
        problems.append(f"key {key!r} is not a beat_schedule entry key")
    body = []
    task = entry.get("task")
    if not isinstance(task, str) or not task or any(c.isspace() for c in task):
        problems.append(f"task {task!r} is not a task name")
    else:
        body.append(("task", _toml(task)))

    try:
        body.extend(_schedule(entry.get("schedule"), bool(entry.get("relative"))))
    except Unconvertible as e:
        problems.append(str(e))

    args = entry.get("args")
    if args is not None:
        if not isinstance(args, (list, tuple)):
            problems.append(f"args must be a list or tuple, not {type(args).__name__}")
        elif args:
            try:
                body.append(("args", _toml(list(args), "args")))
            except Unconvertible as e:
                problems.append(str(e))
    kwargs = entry.get("kwargs")
    if kwargs is not None:
        if not isinstance(kwargs, dict):
            problems.append(f"kwargs must be a dict, not {type(kwargs).__name__}")
        elif kwargs:
            try:
                body.append(("kwargs", _toml(kwargs, "kwargs")))
            except Unconvertible as e:
                problems.append(str(e))

    options = entry.get("options") or {}
    if not isinstance(options, dict):
        problems.append(f"options must be a dict, not {type(options).__name__}")
        options = {}
    try:
        body.extend(_options(options, problems))
    except Unconvertible as e:
        problems.append(str(e))
    if problems:
        raise Unconvertible(problems)
    return body


def _schedule(s, relative):
    if s is None:
        raise Unconvertible("has no schedule")
    if isinstance(s, solar):
        raise Unconvertible(f"solar schedule {s!r} has no sqsbeat equivalent (sqsbeat fires on "
                            "cron, crontab or an interval)")
    if isinstance(s, crontab):
        if type(s) is not crontab:
            raise Unconvertible(f"schedule class {type(s).__module__}.{type(s).__qualname__} is a "
                                "crontab subclass whose firing rules sqsbeat cannot know")
        if s._orig_kwargs.get("nowfun") is not None:
            raise Unconvertible("crontab(nowfun=...) has no equivalent; use the app's timezone")
        return [("crontab", _crontab(s))]
    if isinstance(s, (timedelta, numbers.Real)) and not isinstance(s, bool):
        if relative:
            raise Unconvertible("relative=True (intervals rounded to the period) has no sqsbeat "
                                "equivalent; sqsbeat's `every` counts from a fixed anchor")
        every = s if isinstance(s, timedelta) else timedelta(seconds=float(s))
        return [("every", _toml(_duration(every, "schedule")))]
    if type(s) is schedule:
        if s.relative or relative:
            raise Unconvertible("schedule(relative=True) has no sqsbeat equivalent; sqsbeat's "
                                "`every` counts from a fixed anchor")
        return [("every", _toml(_duration(s.run_every, "run_every")))]
    raise Unconvertible(f"schedule class {type(s).__module__}.{type(s).__qualname__} has no sqsbeat "
                        "equivalent (crontab, schedule, timedelta and numbers do)")


def _duration(td, what):
    """A timedelta as sqsbeat's duration grammar (ms to weeks)."""
    if not isinstance(td, timedelta):
        raise Unconvertible(f"{what} {td!r} is not a timedelta")
    us = td // timedelta(microseconds=1)
    if us <= 0:
        raise Unconvertible(f"{what} {td} must be greater than zero")
    if us % 1000:
        raise Unconvertible(f"{what} {td} is finer than a millisecond, sqsbeat's resolution")
    ms = us // 1000
    parts = []
    for unit, size in (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000),
                       ("m", 60_000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(parts)


def _crontab(c):
    fields = []
    for name, lo, hi, names in _FIELDS:
        text = _cron_field(getattr(c, "_orig_" + name), getattr(c, name), lo, hi, names)
        if text != "*":
            fields.append(f"{name} = {_toml(text)}")
    return "{ " + ", ".join(fields) + " }" if fields else "{}"


def _cron_field(orig, expanded, lo, hi, names):
    """One crontab field as sqsbeat reads it, meaning what Celery made of it.

    Celery's parser and cron syntax agree on ``*``, numbers, ``a-b`` with
    a <= b, ``*/n``, ``a-b/n`` and lists of them (and on the day and month
    names in their fields), so such a field is kept, in canonical spelling.
    Anything else Celery accepts (a range that wraps around like
    ``fri-mon``, a set or list of numbers, a name longer than three letters
    in a range) is written out as the numbers Celery expanded it to.
    """
    if isinstance(orig, str):
        kept = _cron_text(orig, lo, hi, names)
        if kept is not None:
            return kept
    elif isinstance(orig, int) and not isinstance(orig, bool):
        return str(orig)
    values = sorted(expanded)
    if not values:
        raise Unconvertible("a crontab field matches nothing")
    if values == list(range(lo, hi + 1)):
        return "*"
    runs, i = [], 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        a, b = values[i], values[j]
        runs.append(str(a) if a == b else f"{a},{b}" if b == a + 1 else f"{a}-{b}")
        i = j + 1
    return ",".join(runs)


def _cron_text(text, lo, hi, names):
    out = []
    for raw in text.split(","):
        m = _PART.match(raw.strip())
        if not m:
            return None
        star, a, b, step = m.groups()
        if star:
            part = "*"
        else:
            va, vb = _cron_value(a, lo, hi, names), _cron_value(b, lo, hi, names) if b else None
            if va is None or (b and (vb is None or vb[0] < va[0])):
                return None
            part = va[1] + (f"-{vb[1]}" if b else "")
            if step and not b:
                return None
        if step:
            n = int(step)
            if n < 1 or n > hi - lo + 1:
                return None
            part += f"/{n}"
        out.append(part)
    return ",".join(out)


def _cron_value(token, lo, hi, names):
    """(number, spelling) of one value, or None if Celery and cron may differ on it."""
    if token.isdigit():
        n = int(token)
        return (n, str(n)) if lo <= n <= hi else None
    if names and token[:3].lower() in names:
        return names[token[:3].lower()], token[:3].lower()
    return None


def _options(options, problems):
    body = []
    queue = options.get("queue")
    if queue is not None:
        queue = getattr(queue, "name", queue)
        if not isinstance(queue, str) or not queue:
            problems.append(f"options.queue {queue!r} is not a queue name")
        else:
            body.append(("queue", _toml(queue)))
    exchange, routing_key = options.get("exchange"), options.get("routing_key")
    exchange = getattr(exchange, "name", exchange)
    if exchange not in (None, "") or routing_key not in (None, queue):
        problems.append("options.exchange/routing_key: sqsbeat sends to a queue by name only "
                        "(set options.queue)")
    priority = options.get("priority")
    if priority is not None:
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 255:
            problems.append(f"options.priority {priority!r} is not a number 0..255")
        else:
            body.append(("priority", str(priority)))
    expires = options.get("expires")
    if expires is not None:
        if isinstance(expires, datetime):
            problems.append("options.expires is an absolute datetime; sqsbeat's expires is a "
                            "duration after each fire")
        elif isinstance(expires, (numbers.Real, timedelta)) and not isinstance(expires, bool):
            td = expires if isinstance(expires, timedelta) else timedelta(seconds=float(expires))
            try:
                body.append(("expires", _toml(_duration(td, "options.expires"))))
            except Unconvertible as e:
                problems.append(str(e))
        else:
            problems.append(f"options.expires {expires!r} is not a number of seconds")
    headers = options.get("headers")
    if headers:
        if not isinstance(headers, dict):
            problems.append("options.headers must be a dict")
        else:
            taken = sorted(k for k in headers if k in RESERVED_HEADERS)
            if taken:
                problems.append(f"options.headers sets {', '.join(taken)}, which Celery's protocol "
                                "(or sqsbeat) owns")
            else:
                try:
                    body.append(("headers", _toml(headers, "options.headers")))
                except Unconvertible as e:
                    problems.append(str(e))
    group = options.get("MessageGroupId")
    if group is not None:
        if not isinstance(group, str) or not group:
            problems.append(f"options.MessageGroupId {group!r} is not a string")
        else:
            body.append(("group_id", _toml(group)))
    known = {"queue", "exchange", "routing_key", "priority", "expires", "headers", "MessageGroupId"}
    for key in sorted(set(options) - known, key=str):
        if options[key] is not None:
            problems.append(f"options.{key} has no sqsbeat field")
    return body


def _key(name):
    return name if _BARE_KEY.match(name) else _toml(name)


def _toml(value, what="value"):
    """A JSON-compatible Python value as a TOML value (inline)."""
    if isinstance(value, str):
        return '"' + "".join(_TOML_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7f
                                                       else c) for c in value) + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not _I64[0] <= value <= _I64[1]:
            raise Unconvertible(f"{what}: {value} does not fit a 64-bit integer")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Unconvertible(f"{what}: {value} is not a JSON number")
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v, what) for v in value) + "]"
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise Unconvertible(f"{what}: key {k!r} is not a string (JSON keys are)")
            items.append(f"{_key(k)} = {_toml(v, what)}")
        return "{ " + ", ".join(items) + " }" if items else "{}"
    if value is None:
        raise Unconvertible(f"{what}: None (JSON null) cannot be written in TOML")
    raise Unconvertible(f"{what}: {value!r} ({type(value).__name__}) is not JSON")


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
                 "\r": "\\r"}
