"""The two vocabularies of service state, named once.

A keeper writes a `KeeperState` in its pid record; `voicectl status` reports a `ServiceState`,
derived from the record, the live processes and the probe (supervise.status.service_status).
Both are StrEnums so that the JSON records and `status --json` hold the same plain strings.
"""

from __future__ import annotations

from enum import StrEnum


class KeeperState(StrEnum):
    """What a keeper last did with its service (ServiceRecord.state)."""

    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"  # exited; waiting to restart it
    CRASHED = "crashed"  # gave up restarting it
    STOPPING = "stopping"


class ServiceState(StrEnum):
    """What `voicectl status` reports for a service."""

    RUNNING = "running"
    STARTING = "starting"
    UNHEALTHY = "unhealthy"
    CRASHED = "crashed"
    STOPPED = "stopped"
