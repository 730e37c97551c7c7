"""Exceptions raised by `publishers`.

PublishError            the event was not published (Redis unreachable, timeout, refused)
└── InvalidEventError   the event does not match its `events` model (also a ValueError)
"""

from __future__ import annotations


class PublishError(Exception):
    """Publishing failed; the event was not delivered and not stored. Safe to retry."""


class InvalidEventError(PublishError, ValueError):
    """The event is not a valid domain event. A bug in the caller: do not retry."""
