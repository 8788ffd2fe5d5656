"""The one place the CLI gets its Client. Commands call `session.get_client()` (looked up at call
time), so tests replace it with a fake: `monkeypatch.setattr(session, "get_client", ...)`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from digitq.client.cli.output import note

if TYPE_CHECKING:
    from digitq.client.api import Client


def get_client(quiet: bool = False) -> Client:
    """A Client for DIGITQ_BROKER_URL, else for the embedded stack (started when a command first
    needs the broker, with a note on stderr unless `quiet`)."""
    from digitq.client.api import Client

    return Client(notify=None if quiet else note)
