"""Exceptions raised by `publishers`.

PublishError            the event was not published (Redis unreachable, timeout, refused)
└── InvalidEventError   the event or the user id is invalid, never sent (also a ValueError)
"""

from __future__ import annotations


class PublishError(Exception):
    """Publishing failed; the event was not delivered and not stored. Safe to retry."""


class InvalidEventError(PublishError, ValueError):
    """The event or the user id is invalid. A bug in the caller: do not retry."""
