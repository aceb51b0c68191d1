"""The tags a detection carries for global exceptions (`tags: [kms]`): the service it watches, derived from the
SQL's event sources, and its ATT&CK ids. Derived, so a shipped detection never needs editing to be tagged."""

from __future__ import annotations

from pipeline.catalog import Query

SERVICE_TAGS: dict[str, str] = {"kms.amazonaws.com": "kms", "secretsmanager.amazonaws.com": "secrets"}


def detection_tags(query: Query) -> frozenset[str]:
    """The service the detection watches (`kms_...` -> `kms`, `secrets_...` -> `secrets`; a detection named
    otherwise, such as access_denied_storm, by the services its SQL or param defaults name), plus its ATT&CK ids."""
    services = {tag for tag in SERVICE_TAGS.values() if query.id.startswith(f"{tag}_")}
    if not services:
        text = query.sql + " ".join(str(param.default) for param in query.params)
        services = {tag for source, tag in SERVICE_TAGS.items() if source in text}
    return frozenset(services | set(query.attack))
