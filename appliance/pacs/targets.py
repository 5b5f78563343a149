"""The configured PACS: ``AET@host:port`` with an optional ``:sr`` or ``:sc``."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.config import PACS_ADDRESS, Config
from appliance.errors import ConfigError
from appliance.store import pacs_outbox
from appliance.store.db import Store

BOTH = ("sc", "sr")


@dataclass(frozen=True)
class Target:
    aet: str
    host: str
    port: int
    objects: tuple[str, ...]  # "sc", "sr" or both

    @property
    def address(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


def parse_target(text: str) -> Target:
    found = PACS_ADDRESS.match(text.strip())
    if not found:
        raise ConfigError(f"{text!r} is not AET@host:port (optionally :sr or :sc)")
    only = text.strip().rsplit(":", 1)[1] if text.count(":") == 2 else None
    objects = (only,) if only in BOTH else BOTH
    return Target(found["aet"], found["host"], int(found["port"]), objects)


def configured(config: Config) -> list[Target]:
    return [parse_target(text) for text in config.pacs_destinations]


def register(store: Store, config: Config) -> list[Target]:
    """Write the configured PACS into the store (at start-up), so each new result is
    queued for each of them in its own transaction."""
    found = configured(config)
    pacs_outbox.set_targets(store, [(t.address, ",".join(t.objects)) for t in found])
    return found


def from_row(row: dict) -> Target:
    aet, _, rest = row["address"].partition("@")
    host, _, port = rest.rpartition(":")
    return Target(aet, host, int(port), tuple(row["objects"].split(",")))
