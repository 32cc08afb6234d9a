"""The request page and the status page, as server-rendered HTML (no JavaScript). Pure."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from html import escape

from generator import validation
from generator.errors import Problem
from webhook import csrf
from webhook.intake import forms, queueing

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;line-height:1.4}
label{display:block;font-weight:600;margin-top:1rem}
input,select{width:100%;padding:.4rem;font-size:1rem;box-sizing:border-box}
.error{color:#b00020;margin:.2rem 0 0}
[aria-invalid=true]{border:2px solid #b00020}
button{margin-top:1.5rem;padding:.6rem 1.2rem;font-size:1rem}
dt{font-weight:600}
"""

#: The pages' Content-Security-Policy: their one inline style by its hash, nothing else loads or frames them.
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
POLICY = (f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; frame-ancestors 'none'; "
          "base-uri 'none'")


def _page(title: str, body: str, *, refresh: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">{meta}'
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body><main>{body}</main></body></html>\n")


def form_page(*, clusters: Sequence[str], csrf_token: str, values: Mapping[str, str] | None = None,
              problems: Sequence[Problem] = (), message: str = "") -> str:
    """The request form; ``problems`` are shown beside their fields (others above the form)."""
    values = values or {}
    by_field: dict[str, list[str]] = {}
    general: list[str] = []
    for problem in problems:
        name = forms.form_name(problem.field)
        if name:
            by_field.setdefault(name, []).append(problem.message)
        else:
            general.append(str(problem) if problem.field else problem.message)
    parts = ["<h1>Request a store</h1>"]
    if message or general:
        items = "".join(f"<li>{escape(m)}</li>" for m in general)
        parts.append(f'<div role="alert" id="form-error"><p class="error">{escape(message)}</p>'
                     f"{f'<ul>{items}</ul>' if items else ''}</div>")
    parts.append(f'<form method="post" action="/" novalidate>{csrf.field(csrf_token)}')
    choices = {"engine": validation.engines(), "plan": validation.plans_offered(), "cluster": tuple(clusters)}
    for name, _, label in forms.PAGE_FIELDS:
        errors = by_field.get(name, [])
        error_id = f"{name}-error"
        attrs = f'id="{name}" name="{name}"'
        if errors:
            attrs += f' aria-invalid="true" aria-describedby="{error_id}"'
        optional = "(optional)" in label
        if not optional:
            attrs += ' required aria-required="true"'
        parts.append(f'<label for="{name}">{escape(label)}</label>')
        value = values.get(name, "")
        if name in choices:
            options = "".join(f'<option value="{escape(c)}"{" selected" if c == value else ""}>{escape(c)}</option>'
                              for c in choices[name])
            parts.append(f"<select {attrs}>{options}</select>")
        else:
            kind = "email" if name == "owner_email" else "text"
            parts.append(f'<input type="{kind}" {attrs} value="{escape(value)}">')
        if errors:
            parts.append(f'<p class="error" id="{error_id}">{escape("; ".join(errors))}</p>')
    parts.append('<button type="submit">Request store</button></form>')
    return _page("Request a store", "".join(parts))


FINAL = (queueing.COMMITTED, queueing.REJECTED, queueing.PENDING_REVIEW)

_EXPLAIN = {
    queueing.REQUESTED: "Your request is safely queued and will be committed to Git shortly.",
    queueing.PENDING_REVIEW: "Your request waits for review in a pull request.",
    queueing.COMMITTED: "Your store entry is in Git; Argo CD will deploy it.",
    queueing.REJECTED: "Your request could not be committed.",
}


def status_page(request: queueing.Request) -> str:
    """A request's status; refreshes itself (meta refresh) until the request is done."""
    rows = [("Request", request.id), ("Store", request.store_id), ("Action", request.action),
            ("Status", request.status)]
    if request.commit_sha:
        rows.append(("Commit", request.commit_sha))
    if request.review_url:
        rows.append(("Review", request.review_url))
    details = "".join(f"<dt>{escape(k)}</dt><dd id=\"{escape(k.lower())}\">{escape(v)}</dd>" for k, v in rows)
    problems = "".join(f"<li>{escape(str(p))}</li>" for p in request.problems)
    body = (f"<h1>Store request {escape(request.store_id)}</h1>"
            f'<p role="status" id="explain">{escape(_EXPLAIN.get(request.status, request.status))}</p>'
            f"<dl>{details}</dl>{f'<ul>{problems}</ul>' if problems else ''}"
            '<p><a href="/">Request another store</a></p>')
    return _page(f"Store request {request.store_id}: {request.status}", body,
                 refresh=None if request.status in FINAL else 2)
