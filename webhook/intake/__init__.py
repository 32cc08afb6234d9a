"""Intake: store requests in (API, form page, form services), checked, queued durably, landed in Git."""
