"""The tags a detection carries for global exceptions (`tags: [kms]`): the service it watches, derived from the
SQL's event sources, and its ATT&CK ids. Derived, so a shipped detection never needs editing to be tagged."""

from __future__ import annotations

from pipeline.catalog import Query

SERVICE_TAGS: dict[str, str] = {"kms.amazonaws.com": "kms", "secretsmanager.amazonaws.com": "secrets"}


def detection_tags(query: Query) -> frozenset[str]:
    """`kms` / `secrets` for each service the detection's SQL or id names, plus its ATT&CK ids (`T1530`)."""
    tags = {tag for source, tag in SERVICE_TAGS.items() if source in query.sql}
    tags |= {tag for tag in SERVICE_TAGS.values() if query.id.startswith(f"{tag}_")}
    return frozenset(tags | set(query.attack))
