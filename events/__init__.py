"""Typed event schemas shared by the gateway and the publishers.

Every event travels in the origin's flat wire shape::

    {"event": "<type>", ...fields..., "timestamp": "<ISO 8601>", "id": "<stream id>"?}

This package depends on pydantic only and does no I/O.
"""

from __future__ import annotations

from events.catalog import (
    DOMAIN_EVENT_TYPES,
    EVENT_MODELS,
    REGISTERED_EVENT_TYPES,
    SYSTEM_EVENT_TYPES,
    AnyEvent,
    BatchFileAdded,
    BatchFileRemoved,
    BatchLockedForProcessing,
    BatchPhaseConcluded,
    ClassCreated,
    ClassUpdated,
    Connected,
    Disconnect,
    EssayStatusUpdated,
    EssayStudentAssociationUpdated,
    Event,
    Ping,
    Resync,
    StudentCreated,
    StudentParsingCompleted,
    StudentUpdated,
    parse_event,
)
from events.channels import USER_ID_RULE, KeySpace, history_key, user_channel, valid_user_id
from events.schema import json_schemas

__all__ = [
    "DOMAIN_EVENT_TYPES",
    "EVENT_MODELS",
    "REGISTERED_EVENT_TYPES",
    "SYSTEM_EVENT_TYPES",
    "USER_ID_RULE",
    "AnyEvent",
    "BatchFileAdded",
    "BatchFileRemoved",
    "BatchLockedForProcessing",
    "BatchPhaseConcluded",
    "ClassCreated",
    "ClassUpdated",
    "Connected",
    "Disconnect",
    "EssayStatusUpdated",
    "EssayStudentAssociationUpdated",
    "Event",
    "KeySpace",
    "Ping",
    "Resync",
    "StudentCreated",
    "StudentParsingCompleted",
    "StudentUpdated",
    "history_key",
    "json_schemas",
    "parse_event",
    "user_channel",
    "valid_user_id",
]
