"""The Slack incoming-webhook message for an alert: readable at a glance, within Slack's limits.

Layout: a notification `text` (priority, rule, host), then one attachment coloured by
priority holding Block Kit blocks: the output, a fields section (priority, host, process,
connection, container, pod, enforcement) and a context line (time, tags, uuid).
Limits respected (https://api.slack.com/reference/block-kit/blocks): section text <= 3000
chars, at most 10 fields of <= 2000 chars each, context text <= 3000 chars; longer values
are cut and end with a visible "… [truncated N chars]" marker.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from alerts.model import Alert
from alerts.priority import PRIORITY_COLOURS

SECTION_TEXT_LIMIT = 3000
FIELD_TEXT_LIMIT = 2000
CONTEXT_TEXT_LIMIT = 3000
MAX_FIELDS = 10
NOTIFICATION_LIMIT = 300
#: Per-value cap inside the fields section, so one long command line cannot crowd out the rest.
VALUE_LIMIT = 500

_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")


def escape(text: str) -> str:
    """Slack mrkdwn escaping of &, < and >."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fit(text: str, limit: int) -> str:
    """Escape `text` and cut it to `limit` chars with a visible truncation marker."""
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    marker = f"… [truncated {len(escaped) - limit} chars]"
    cut = _PARTIAL_ENTITY.sub("", escaped[: max(0, limit - len(marker) - 8)])
    marker = f"… [truncated {len(escaped) - len(cut)} chars]"
    return cut + marker


def _get(fields: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        value = fields.get(name)
        if value not in (None, "", "<NA>"):
            return value
    return None


def _process(f: Mapping[str, Any]) -> str | None:
    exe = _get(f, "proc.exepath", "proc.exe", "proc.name")
    if exe is None:
        return None
    pid = _get(f, "proc.pid")
    line = f"`{fit(str(exe), VALUE_LIMIT)}`" + (f" (pid {pid})" if pid is not None else "")
    cmd = _get(f, "proc.cmdline")
    if cmd is not None:
        line += f"\n`{fit(str(cmd), VALUE_LIMIT)}`"
    user = _get(f, "user.name", "user.uid")
    if user is not None:
        line += f"\nuser {fit(str(user), 100)}"
    return line


def _connection(f: Mapping[str, Any]) -> str | None:
    proto = _get(f, "fd.l4proto")
    cip, cport, sip, sport = (_get(f, n) for n in ("fd.cip", "fd.cport", "fd.sip", "fd.sport"))
    if sip is not None or cip is not None:
        text = f"{cip or '?'}:{cport if cport is not None else '?'} → {sip or '?'}:" \
               f"{sport if sport is not None else '?'}"
    elif (name := _get(f, "fd.name")) is not None:
        text = str(name)
    elif (lport := _get(f, "fd.lport")) is not None:
        text = f"listening on {_get(f, 'fd.lip') or '*'}:{lport}"
    else:
        return None
    return fit(f"{proto} {text}" if proto else text, VALUE_LIMIT)


def _container(f: Mapping[str, Any]) -> str | None:
    cid = _get(f, "container.id")
    if cid is None or cid == "host":
        return None
    name, image = _get(f, "container.name"), _get(f, "container.image")
    text = f"{name} ({cid})" if name else str(cid)
    return fit(text + (f"\n{image}" if image else ""), VALUE_LIMIT)


def _pod(f: Mapping[str, Any]) -> str | None:
    pod = _get(f, "k8s.pod.name")
    if pod is None:
        return None
    ns = _get(f, "k8s.ns.name")
    return fit(f"{ns}/{pod}" if ns else str(pod), VALUE_LIMIT)


def _enforcement(f: Mapping[str, Any]) -> str | None:
    action = _get(f, "netvigil.enforce.action")
    if action is None:
        return None
    mode = _get(f, "netvigil.enforce.mode") or "?"
    scope = _get(f, "netvigil.enforce.scope")
    text = f"{action} ({mode})" + (f", scope {scope}" if scope else "")
    return fit(text, VALUE_LIMIT)


def build_message(alert: Alert, *, channel: str | None = None, username: str | None = None,
                  icon_emoji: str | None = None) -> dict[str, Any]:
    """The JSON body to POST to a Slack incoming webhook for `alert`."""
    f = alert.output_fields
    pairs: list[tuple[str, str | None]] = [
        ("Priority", alert.priority), ("Host", fit(alert.hostname, VALUE_LIMIT)),
        ("Process", _process(f)), ("Connection", _connection(f)),
        ("Container", _container(f)), ("Pod", _pod(f)), ("Enforcement", _enforcement(f)),
    ]
    if alert.suppressed_count:
        pairs.append(("Suppressed", f"{alert.suppressed_count} similar alerts"))
    fields = [{"type": "mrkdwn", "text": fit_field(title, value)}
              for title, value in pairs if value is not None][:MAX_FIELDS]
    context = f"{alert.time} · source {alert.source}"
    if alert.tags:
        context += " · tags " + ", ".join(alert.tags)
    context += f" · uuid {alert.uuid}"
    colour = PRIORITY_COLOURS.get(alert.priority, "#cccccc")
    notification = fit(f"[{alert.priority}] {alert.rule} on {alert.hostname}", NOTIFICATION_LIMIT)
    header = f"*{fit(alert.rule, 200)}*\n"
    output = alert.output
    prefix = f"{alert.time[11:29]}: {alert.priority} "
    if output.startswith(prefix):
        output = output[len(prefix):]  # time and priority are shown in their own places
    blocks = [
        {"type": "section",
         "text": {"type": "mrkdwn", "text": header + fit(output, SECTION_TEXT_LIMIT - len(header))}},
        {"type": "section", "fields": fields},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": fit(context, CONTEXT_TEXT_LIMIT)}]},
    ]
    message: dict[str, Any] = {
        "text": notification,
        "attachments": [{"color": colour, "fallback": notification, "blocks": blocks}],
    }
    if channel:
        message["channel"] = channel
    if username:
        message["username"] = username
    if icon_emoji:
        message["icon_emoji"] = icon_emoji
    return message


def fit_field(title: str, value: str) -> str:
    """`*Title*\\nvalue` within the field limit (value already escaped)."""
    text = f"*{title}*\n{value}"
    if len(text) <= FIELD_TEXT_LIMIT:
        return text
    cut = len(text) - FIELD_TEXT_LIMIT
    return text[: FIELD_TEXT_LIMIT - 40] + f"… [truncated {cut + 40} chars]"
