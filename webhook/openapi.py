"""The OpenAPI document of the service, with the store schema the generator uses as the request body."""

from __future__ import annotations

from typing import Any

from generator import constants, validation


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


_ACCEPTED = {"description": "Accepted and durably queued",
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}}
_AUTH = {"401": _error("Missing or unknown bearer token"), "403": _error("The token may only read"),
         "429": _error("Over the client's rate")}


def _console() -> dict[str, Any]:
    """The console's pages (HTML, signed in) and the forms they post (with the page's CSRF token)."""
    page = {"200": {"description": "HTML page"}, "303": {"description": "To sign-in"},
            "404": _error("Sign-in is off, or no such store")}
    posted = {"303": {"description": "Done: to the store's page"}, "401": _error("Not signed in"),
              "403": _error("No valid CSRF token, or not allowed"), "404": _error("Sign-in is off"),
              "413": _error("Too large"), "415": _error("Wrong content type"), "422": {"description": "The page again"}}
    form = {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}}
    store = [{"name": "store_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    return {
        "/console": {"get": {"summary": "My stores", "security": [], "responses": page}},
        "/console/fleet": {"get": {"summary": "The fleet (operators and viewers)", "security": [], "responses": page}},
        "/console/request": {"get": {"summary": "Request a store", "security": [], "responses": page},
                             "post": {"summary": "Request a store", "security": [], "requestBody": form,
                                      "responses": posted}},
        "/console/stores/{store_id}": {
            "parameters": store,
            "get": {"summary": "A store: status, timeline, actions", "security": [], "responses": page},
            "post": {"summary": "Suspend, resume, change plan or delete", "security": [], "requestBody": form,
                     "responses": posted}},
        "/console/stores/{store_id}/credentials/{link}": {
            "parameters": [*store, {"name": "link", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {"summary": "The admin credentials, once, to the store's owner", "security": [],
                    "responses": page}},
    }


def document() -> dict[str, Any]:
    store = {k: v for k, v in validation.load_schema(constants.STORE_SCHEMA).items() if k not in ("$schema", "$id")}
    idem = {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"},
            "description": "A retry with the same key returns the first answer."}
    return {
        "openapi": "3.1.0",
        "info": {"title": "storeops intake", "version": "1",
                 "description": "Store requests in; store entries committed to Git."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Store": store,
                "Accepted": {"type": "object", "required": ["request_id", "store_id", "status_url"],
                             "properties": {"request_id": {"type": "string"}, "store_id": {"type": "string"},
                                            "status": {"type": "string"}, "status_url": {"type": "string"}}},
                "Problem": {"type": "object", "properties": {
                    "field": {"type": "string"}, "message": {"type": "string"},
                    "path": {"type": "string"}, "line": {"type": "integer"}}},
                "StatusCallback": {
                    "type": "object", "required": ["event_id", "store_id", "status", "url", "error", "revision", "at"],
                    "properties": {
                        "event_id": {"type": "string", "description": "The transition's id (its number in the status "
                                     "ledger): the same on every delivery of it; drop a repeat by it"},
                        "store_id": {"type": "string"}, "status": {"type": "string"},
                        "url": {"type": ["string", "null"], "description": "The store's URL, when ready"},
                        "error": {"type": ["string", "null"]}, "revision": {"type": ["string", "null"]},
                        "at": {"type": "string", "format": "date-time"},
                        "admin_url": {"type": "string"}, "credentials": {"type": "object"},
                        "publishable_key": {"type": "string"}}},
                "Error": {"type": "object", "properties": {
                    "error": {"type": "string"},
                    "problems": {"type": "array", "items": {"$ref": "#/components/schemas/Problem"}}}},
            },
        },
        "security": [{"bearer": []}],
        "webhooks": {
            "storeStatus": {"post": {
                "summary": "A store's status changed (POSTed to STOREOPS_CALLBACK_URL and the store's callbackUrl)",
                "description": "Delivered at least once; signed in X-Storeops-Signature-256 (sha256=HMAC of the body).",
                "parameters": [{"name": "X-Storeops-Event", "in": "header", "required": True,
                                "schema": {"type": "string"}, "description": "The payload's event_id"}],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/StatusCallback"}}}},
                "responses": {"2XX": {"description": "Delivered; anything else is retried with backoff"}}}},
        },
        "paths": {
            "/v1/stores": {
                "post": {"summary": "Request a new store", "parameters": [idem],
                         "requestBody": {"required": True, "content": {
                             "application/json": {"schema": {"$ref": "#/components/schemas/Store"}}}},
                         "responses": {"202": _ACCEPTED, "400": _error("The body is not JSON"),
                                       "409": _error("The id or domain is taken in Git or in the queue"),
                                       "413": _error("The body is too large"),
                                       "415": _error("The body is not application/json"),
                                       "422": _error("The store breaks the schema or a fleet rule"), **_AUTH}},
                "get": {"summary": "Stores in Git and in the queue, one status each; filtered and paged",
                        "parameters": [*({"name": f, "in": "query", "required": False, "schema": {"type": "string"}}
                                         for f in ("owner", "status", "cluster", "engine", "after")),
                                       {"name": "limit", "in": "query", "required": False,
                                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
                        "responses": {"200": {"description": "Stores, and the next page's `after`"},
                                      "400": _error("Unknown filter or bad limit"), **_AUTH}},
            },
            "/v1/stores/{store_id}": {
                "parameters": [{"name": "store_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "get": {"summary": "One store and its queued requests",
                        "responses": {"200": {"description": "The store"}, "404": _error("Unknown store"), **_AUTH}},
                "patch": {"summary": "Change a store's fields (JSON merge patch, e.g. {\"state\": \"suspended\"})",
                          "parameters": [idem],
                          "requestBody": {"required": True, "content": {
                              "application/merge-patch+json": {"schema": {"type": "object"}},
                              "application/json": {"schema": {"type": "object"}}}},
                          "responses": {"202": _ACCEPTED, "404": _error("Unknown store"),
                                        "409": _error("The new domain is taken"), "413": _error("Too large"),
                                        "415": _error("Wrong content type"), "422": _error("Invalid change"),
                                        **_AUTH}},
                "delete": {"summary": "Request the store's removal", "parameters": [
                    idem, {"name": "X-Storeops-Mass-Delete-Reason", "in": "header", "required": False,
                           "schema": {"type": "string", "maxLength": 500},
                           "description": "Why to delete beyond the mass-delete limit (kept and audited)"}],
                           "responses": {"202": _ACCEPTED, "404": _error("Unknown store"),
                                         "409": _error("Already being deleted, or too many deletions queued"),
                                         **_AUTH}},
            },
            "/v1/stores/{store_id}/history": {
                "parameters": [{"name": "store_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "get": {"summary": "The store's requests (who, when, from where, what) and reported transitions",
                        "responses": {"200": {"description": "The history"}, "404": _error("Unknown store"),
                                      **_AUTH}},
            },
            "/v1/stores/{store_id}/rollback": {
                "parameters": [{"name": "store_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "post": {"summary": "Put the store's entry back as it was when the store was last ready (or at `to`), "
                                   "as a new change that keeps the reason in its commit",
                         "requestBody": {"required": True, "content": {"application/json": {"schema": {
                             "type": "object", "additionalProperties": False, "required": ["reason"],
                             "properties": {"reason": {"type": "string", "minLength": 1},
                                            "to": {"type": "string"}, "restore": {"type": "boolean"}}}}}},
                         "responses": {"202": {"description": "Queued (request id and status URL)"},
                                       "404": _error("Unknown store"), "409": _error("Nothing to roll back to"),
                                       "422": _error("No reason, or the old entry is refused (e.g. smaller volumes)"),
                                       "503": _error("The status reader is off"), **_AUTH}},
            },
            "/v1/stores/{store_id}/backups": {
                "parameters": [{"name": "store_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "get": {"summary": "The store's finished backups, newest first (a deleted store's too, while kept)",
                        "responses": {"200": {"description": "Backups: id, kind, created, size"},
                                      "404": _error("Unknown store, or its cluster keeps no backups"),
                                      "503": _error("The status reader is off, or the backup keys are missing"),
                                      **_AUTH}},
                "post": {"summary": "Back the store up now (a Job from its backup CronJob, kind manual)",
                         "responses": {"202": {"description": "The Job started"}, "404": _error("Unknown store"),
                                       "503": _error("The store has no backup CronJob yet, or the status reader "
                                                     "is off"), **_AUTH}},
            },
            "/v1/stores/{store_id}/restore": {
                "parameters": [{"name": "store_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "post": {"summary": "A store from one of this store's backups: into a new id (to), or back under its "
                                   "own id once it was deleted",
                         "requestBody": {"required": True, "content": {"application/json": {"schema": {
                             "type": "object", "additionalProperties": False, "required": ["from"],
                             "properties": {"from": {"type": "string"}, "to": {"type": "string"}}}}}},
                         "responses": {"202": {"description": "Queued (request id and status URL)"},
                                       "404": _error("Unknown store or backup"),
                                       "409": _error("The store exists (restore into a new id) or the id is taken"),
                                       "422": _error("Not a backup id, or the new store is refused"),
                                       "503": _error("The status reader is off"), **_AUTH}},
            },
            "/v1/rollouts": {
                "post": {"summary": "Move the stores of an engine (of a cluster) to a released chart version in waves: "
                                    "a canary wave, then batches, each after every store of the last is ready",
                         "requestBody": {"required": True, "content": {"application/json": {"schema": {
                             "type": "object", "additionalProperties": False, "required": ["engine", "version"],
                             "properties": {"engine": {"type": "string"}, "version": {"type": "string"},
                                            "cluster": {"type": "string"},
                                            "canary": {"oneOf": [{"type": "integer", "minimum": 1},
                                                                 {"type": "array", "items": {"type": "string"},
                                                                  "minItems": 1}]},
                                            "batch": {"type": "integer", "minimum": 1},
                                            "timeout": {"type": "number", "exclusiveMinimum": 0}}}}}},
                         "responses": {"201": {"description": "The rollout: its waves and state"},
                                       "403": _error("Not an operator"),
                                       "409": _error("Another rollout is moving some of the stores"),
                                       "422": _error("No such release, cluster or canary; nothing to move"),
                                       "503": _error("The status reader is off"), **_AUTH}},
                "get": {"summary": "The latest rollouts",
                        "responses": {"200": {"description": "Rollouts, newest first"}, **_AUTH}},
            },
            "/v1/rollouts/{rollout_id}": {
                "parameters": [{"name": "rollout_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "get": {"summary": "A rollout: its waves, where it stands, and the report of a halt",
                        "responses": {"200": {"description": "The rollout"}, "404": _error("Unknown rollout"),
                                      **_AUTH}},
            },
            "/v1/stores/{store_id}/credentials/link": {
                "parameters": [{"name": "store_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "post": {"summary": "A link that shows the store's admin credentials once, to its owner only",
                         "responses": {"201": {"description": "The link (url, expires)"},
                                       "403": _error("Not the store's owner"), "404": _error("Unknown store"),
                                       "409": _error("The credentials were shown already"), **_AUTH}},
            },
            "/v1/stores/{store_id}/credentials/rotate": {
                "parameters": [{"name": "store_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "post": {"summary": "Give the store's admin a new password: adminPasswordRotation one up, committed "
                                   "like any change; the next credentials link shows it once the store has it",
                         "responses": {"202": {"description": "Queued (request id and status URL)"},
                                       "404": _error("Unknown store"), **_AUTH}},
            },
            "/v1/stores/{store_id}/credentials/{link}": {
                "parameters": [{"name": "store_id", "in": "path", "required": True, "schema": {"type": "string"}},
                               {"name": "link", "in": "path", "required": True, "schema": {"type": "string"}}],
                "get": {"summary": "The admin login and password, once, to the owner the link was made for",
                        "responses": {"200": {"description": "login, password, admin_url"},
                                      "403": _error("Not the store's owner"), "404": _error("Unknown link"),
                                      "410": _error("Used already, or expired"),
                                      "503": _error("Not made yet, being changed, or the cluster is out of reach"),
                                      **_AUTH}},
            },
            "/v1/requests/{request_id}": {
                "parameters": [{"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "get": {"summary": "What became of a request (requested, pending-review, committed, rejected)",
                        "responses": {"200": {"description": "The request"}, "404": _error("Unknown request"),
                                      **_AUTH}},
            },
            "/v1/webhooks/form": {
                "post": {"summary": "A form service's delivery, signed with HMAC-SHA256 of the raw body",
                         "security": [], "parameters": [
                             {"name": "X-Storeops-Signature", "in": "header", "required": True,
                              "schema": {"type": "string"}, "description": "sha256=<hex>; header name configurable"},
                             {"name": "X-Delivery-Id", "in": "header", "required": False,
                              "schema": {"type": "string"},
                              "description": "informational; a delivery is known by its signed body"}],
                         "requestBody": {"required": True, "content": {
                             "application/json": {"schema": {"type": "object"}},
                             "application/x-www-form-urlencoded": {"schema": {"type": "object"}}}},
                         "responses": {"202": _ACCEPTED, "400": _error("Unreadable, or outside its window"),
                                       "401": _error("No signature"),
                                       "403": _error("Wrong signature, or the webhook is off"),
                                       "409": _error("Taken"), "413": _error("Too large"),
                                       "415": _error("Wrong content type"), "422": _error("Invalid store")}},
            },
            "/v1/webhooks/forms/{name}": {
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                "post": {"summary": "A delivery of one form of the form mapping (Typeform, Tally, Standard Webhooks, "
                                    "HMAC), signed as its service signs; 404 for a form not in the mapping",
                         "security": [],
                         "requestBody": {"required": True,
                                         "content": {"application/json": {"schema": {"type": "object"}}}},
                         "responses": {"202": _ACCEPTED, "400": _error("Unreadable, or outside the replay window"),
                                       "401": _error("No signature"), "403": _error("Wrong signature"),
                                       "404": _error("No such form"), "409": _error("Taken"),
                                       "413": _error("Too large"),
                                       "422": _error("Answers that make no valid store, said per question")}},
            },
            "/v1/webhooks/github": {
                "post": {"summary": "A GitHub delivery (X-Hub-Signature-256); 404 while the webhook is off",
                         "security": [], "parameters": [
                             {"name": "X-Hub-Signature-256", "in": "header", "required": True,
                              "schema": {"type": "string"}},
                             {"name": "X-GitHub-Event", "in": "header", "required": True,
                              "schema": {"type": "string"}},
                             {"name": "X-GitHub-Delivery", "in": "header", "required": True,
                              "schema": {"type": "string"}}],
                         "requestBody": {"required": True,
                                         "content": {"application/json": {"schema": {"type": "object"}}}},
                         "responses": {"200": {"description": "Answered (ignored, duplicate, pong)"},
                                       "202": {"description": "Recorded; the work follows"},
                                       "400": _error("Malformed"), "401": _error("Wrong or missing signature"),
                                       "404": _error("The GitHub webhook is off"), "413": _error("Too large"),
                                       "503": _error("Too many deliveries being read")}},
            },
            "/v1/stores/{store_id}/status": {
                "parameters": [{"name": "store_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "get": {"summary": "Where Argo CD has the store (the status reader)",
                        "responses": {"200": {"description": "The status"}, "404": _error("No Application seen"),
                                      "503": _error("The status reader is off"), **_AUTH}},
            },
            "/v1/stores/{store_id}/events": {
                "parameters": [{"name": "store_id", "in": "path", "required": True, "schema": {"type": "string"}},
                               {"name": "Last-Event-ID", "in": "header", "required": False,
                                "schema": {"type": "string"}}],
                "get": {"summary": "The store's transitions as Server-Sent Events",
                        "responses": {"200": {"description": "text/event-stream"},
                                      "503": _error("The status reader is off"), **_AUTH}},
            },
            "/v1/events": {"get": {"summary": "Transitions of many stores (?stores=a,b, or every store you see) as "
                                              "one Server-Sent Events stream",
                                   "parameters": [{"name": "stores", "in": "query", "required": False,
                                                   "schema": {"type": "string"}}],
                                   "responses": {"200": {"description": "text/event-stream"},
                                                 "503": _error("The status reader is off"), **_AUTH}}},
            "/v1/status": {"get": {"summary": "The fleet's status, by store",
                                   "responses": {"200": {"description": "Counts and stores"},
                                                 "503": _error("The status reader is off"), **_AUTH}}},
            "/metrics/status": {"get": {"summary": "The status reader's Prometheus metrics", "security": [],
                                        "responses": {"200": {"description": "text exposition format"},
                                                      "503": _error("The status reader is off")}}},
            "/openapi.json": {"get": {"summary": "This document", "security": [],
                                      "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/": {"get": {"summary": "The request form (HTML); 404 when off", "security": [],
                          "responses": {"200": {"description": "HTML form"}, "404": _error("The form is off")}},
                  "post": {"summary": "Submit the request form (needs the page's CSRF token and cookie)",
                           "security": [],
                           "requestBody": {"required": True, "content": {
                               "application/x-www-form-urlencoded": {"schema": {"type": "object"}}}},
                           "responses": {"303": {"description": "To the request's status page"},
                                         "403": _error("No valid CSRF token"), "404": _error("The form is off"),
                                         "413": _error("Too large"), "415": _error("Wrong content type"),
                                         "422": {"description": "The form again, with the problems"},
                                         "429": _error("Over the client's rate")}}},
            "/requests/{request_id}": {
                "parameters": [{"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "get": {"summary": "A request's status page (HTML)", "security": [],
                        "responses": {"200": {"description": "HTML"}, "404": {"description": "Unknown request"}}},
            },
            "/signin": {"get": {"summary": "Sign in with the OpenID Connect provider (404 when sign-in is off)",
                                "security": [], "parameters": [{"name": "next", "in": "query", "required": False,
                                                                "schema": {"type": "string"}}],
                                "responses": {"303": {"description": "To the provider"},
                                              "404": _error("Sign-in is off")}}},
            "/signin/callback": {"get": {"summary": "Where the provider sends the browser back", "security": [],
                                         "parameters": [{"name": n, "in": "query", "required": False,
                                                         "schema": {"type": "string"}} for n in ("code", "state")],
                                         "responses": {"303": {"description": "Signed in"},
                                                       "400": _error("Expired or foreign sign-in"),
                                                       "401": _error("The provider's answer does not hold"),
                                                       "404": _error("Sign-in is off")}}},
            "/signout": {"post": {"summary": "End the session", "security": [],
                                  "responses": {"303": {"description": "Signed out"},
                                                "403": _error("Sent from another site"),
                                                "404": _error("Sign-in is off")}}},
            **_console(),
            "/healthz": {"get": {"summary": "The process is up", "security": [],
                                 "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "Git state loaded; requests can be checked", "security": [],
                                "responses": {"200": {"description": "ready"}, "503": {"description": "not yet"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [],
                                 "responses": {"200": {"description": "text exposition format"}}}},
        },
    }
