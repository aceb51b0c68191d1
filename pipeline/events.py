"""CloudTrail record -> normalized row. `EVENTS_SCHEMA` is the contract every SQL file depends on.

Pure functions only. A log object's bytes are decoded with msgspec into typed structs that declare just the
fields keytrail promotes; nested parts (requestParameters, responseElements, ...) stay as raw JSON text and
are decoded only for the few keys that get promoted, and only for kept events.

Columns (CloudTrail names in snake_case plus promoted fields):

    event_id              eventID (unique in what lake readers see)
    event_time            eventTime as timestamp[us, UTC] (an offset is honoured: +05:00 is converted)
    event_date            UTC date of event_time: the lake's hive partition
    event_source          eventSource, e.g. kms.amazonaws.com
    event_name            eventName, e.g. Decrypt, GetSecretValue, RotationFailed
    event_type            eventType: AwsApiCall, AwsServiceEvent, ...
    event_category        eventCategory (Management / Data), null on old records
    event_version         eventVersion
    aws_region            awsRegion
    recipient_account_id  recipientAccountId (the account whose trail recorded it)
    principal_type        userIdentity.type: IAMUser, AssumedRole, AWSService, AWSAccount, Root, ...; null
                          for service events that carry no identity type
    principal_arn         userIdentity.arn (null for AWSService, AWSAccount, service events)
    principal_id          userIdentity.principalId
    principal_account_id  userIdentity.accountId
    principal_name        userName; else the role/session part of an assumed-role ARN; else invokedBy
    access_key_id         userIdentity.accessKeyId (as CloudTrail recorded it; never a secret key)
    session_issuer_arn    sessionContext.sessionIssuer.arn (the role behind an assumed-role session)
    session_issuer_name   sessionContext.sessionIssuer.userName
    session_mfa           sessionContext.attributes.mfaAuthenticated as boolean
    invoked_by            userIdentity.invokedBy (the AWS service acting for the caller)
    source_ip             sourceIPAddress (an IP, or a service name for service calls)
    user_agent            userAgent
    vpc_endpoint_id       vpcEndpointId
    error_code            errorCode, null on success
    error_message         errorMessage
    read_only             readOnly as boolean
    request_id            requestID
    shared_event_id       sharedEventID (cross-account copies of one call share it)
    key_arn               the KMS key: resources[] key ARN, else requestParameters.keyId (an ARN, or a bare id
                          expanded with region/account), else a created key's ARN; null for aliases only
    key_id                the part after ':key/' of key_arn; else keyId as written (an alias)
    secret_id             the first secret: resources[] secret ARN, else requestParameters.secretId
    secret_ids            every secret the call names (resources[], secretId, secretIdList[]); BatchGetSecretValue
                          reads several
    encryption_context    requestParameters.encryptionContext (ReEncrypt: sourceEncryptionContext) as
                          MAP<VARCHAR, VARCHAR>; null when the call had none
    request_parameters    verbatim JSON text of requestParameters (null when CloudTrail wrote null); detections read
                          rare calls' fields from it (ReEncrypt destinationKeyId, a secret's kmsKeyId,
                          addReplicaRegions[] / removeReplicaRegions[]) rather than promoting columns for them
    response_elements     verbatim JSON text of responseElements
    additional_event_data verbatim JSON text of additionalEventData
    service_event_details verbatim JSON text of serviceEventDetails
    resources             verbatim JSON text of resources
    source_object         the S3 key (or file path) the event was read from
"""

from __future__ import annotations

import datetime as dt
import itertools
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.ingest_failures import DECODE_ERRORS, RECORD_ERRORS, LogFormatError, record_fault
from pipeline.record_split import split_records_flat
from pipeline.times import EARLIEST, LATEST, display, parse_timestamp

KMS_SOURCE = "kms.amazonaws.com"
SECRETS_SOURCE = "secretsmanager.amazonaws.com"
# CloudTrail's own management events (StopLogging, DeleteTrail, PutEventSelectors, ...): few, and the only sign a
# trail is being blinded (the trail_logging_tampered detection). Analyses count KMS + Secrets Manager only
# (the `audited_service` macro).
CLOUDTRAIL_SOURCE = "cloudtrail.amazonaws.com"
DEFAULT_SOURCES: tuple[str, ...] = (KMS_SOURCE, SECRETS_SOURCE, CLOUDTRAIL_SOURCE)

_JSON = pa.string()  # nested parts are kept as verbatim JSON text

EVENTS_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("event_date", pa.date32(), nullable=False),
        pa.field("event_source", pa.string(), nullable=False),
        pa.field("event_name", pa.string(), nullable=False),
        pa.field("event_type", pa.string()),
        pa.field("event_category", pa.string()),
        pa.field("event_version", pa.string()),
        pa.field("aws_region", pa.string()),
        pa.field("recipient_account_id", pa.string()),
        pa.field("principal_type", pa.string()),
        pa.field("principal_arn", pa.string()),
        pa.field("principal_id", pa.string()),
        pa.field("principal_account_id", pa.string()),
        pa.field("principal_name", pa.string()),
        pa.field("access_key_id", pa.string()),
        pa.field("session_issuer_arn", pa.string()),
        pa.field("session_issuer_name", pa.string()),
        pa.field("session_mfa", pa.bool_()),
        pa.field("invoked_by", pa.string()),
        pa.field("source_ip", pa.string()),
        pa.field("user_agent", pa.string()),
        pa.field("vpc_endpoint_id", pa.string()),
        pa.field("error_code", pa.string()),
        pa.field("error_message", pa.string()),
        pa.field("read_only", pa.bool_()),
        pa.field("request_id", pa.string()),
        pa.field("shared_event_id", pa.string()),
        pa.field("key_arn", pa.string()),
        pa.field("key_id", pa.string()),
        pa.field("secret_id", pa.string()),
        pa.field("secret_ids", pa.list_(pa.string())),
        pa.field("encryption_context", pa.map_(pa.string(), pa.string())),
        pa.field("request_parameters", _JSON),
        pa.field("response_elements", _JSON),
        pa.field("additional_event_data", _JSON),
        pa.field("service_event_details", _JSON),
        pa.field("resources", _JSON),
        pa.field("source_object", pa.string(), nullable=False),
    ]
)
COLUMNS: tuple[str, ...] = tuple(EVENTS_SCHEMA.names)


# --- typed decoding: only the fields keytrail reads; nested parts stay raw --------------------------------


class _SessionIssuer(msgspec.Struct, omit_defaults=True, gc=False):
    arn: str | None = None
    userName: str | None = None


class _SessionAttributes(msgspec.Struct, omit_defaults=True, gc=False):
    # Real trails write "true"/"false" strings; accept booleans too.
    mfaAuthenticated: str | bool | None = None


class _SessionContext(msgspec.Struct, omit_defaults=True, gc=False):
    sessionIssuer: _SessionIssuer | None = None
    attributes: _SessionAttributes | None = None


# Fields are declared in the order CloudTrail writes them: msgspec matches keys fastest in declared order
# (~8% less decode time). `Record` is kw_only so that its required fields can sit where CloudTrail puts them.


class _UserIdentity(msgspec.Struct, omit_defaults=True, gc=False):
    type: str | None = None
    principalId: str | None = None
    arn: str | None = None
    accountId: str | None = None
    accessKeyId: str | None = None
    userName: str | None = None
    sessionContext: _SessionContext | None = None
    invokedBy: str | None = None


# Raw cannot sit in a union with None: an empty Raw stands for "field absent".
_ABSENT = msgspec.Raw(b"")


class Record(msgspec.Struct, omit_defaults=True, gc=False, kw_only=True):
    """One CloudTrail record as keytrail reads it. Unknown fields are ignored."""

    eventVersion: str | None = None
    userIdentity: _UserIdentity | None = None
    eventTime: str
    eventSource: str
    eventName: str
    awsRegion: str | None = None
    sourceIPAddress: str | None = None
    userAgent: str | None = None
    errorCode: str | None = None
    errorMessage: str | None = None
    requestParameters: msgspec.Raw = _ABSENT
    responseElements: msgspec.Raw = _ABSENT
    additionalEventData: msgspec.Raw = _ABSENT
    requestID: str | None = None
    eventID: str
    readOnly: bool | str | None = None
    resources: msgspec.Raw = _ABSENT
    eventType: str | None = None
    recipientAccountId: str | None = None
    sharedEventID: str | None = None
    vpcEndpointId: str | None = None
    serviceEventDetails: msgspec.Raw = _ABSENT
    eventCategory: str | None = None


class _Head(msgspec.Struct, gc=False):
    """Just enough of a record to decide whether to keep it."""

    eventSource: str | None = None


class _Envelope(msgspec.Struct):
    Records: list[msgspec.Raw]


class _HeadEnvelope(msgspec.Struct):
    Records: list[_Head]


class _RecordEnvelope(msgspec.Struct):
    Records: list[Record]


@dataclass(frozen=True)
class RejectedRecord:
    """A record that could not be normalized, with the reason. Kept for the quarantine."""

    index: int
    reason: str
    raw: bytes


_envelope_decoder = msgspec.json.Decoder(_Envelope)
_head_decoder = msgspec.json.Decoder(_Head)
_heads_decoder = msgspec.json.Decoder(_HeadEnvelope)
_records_decoder = msgspec.json.Decoder(_RecordEnvelope)
_record_decoder = msgspec.json.Decoder(Record)
_any_decoder = msgspec.json.Decoder()


def split_records(data: bytes) -> list[msgspec.Raw]:
    """The raw JSON of each element of a log file's `Records` array. Raises LogFormatError otherwise."""
    if not data.strip():
        raise LogFormatError("empty object")
    try:
        return _envelope_decoder.decode(data).Records
    except msgspec.ValidationError as exc:
        raise LogFormatError(f"not a CloudTrail log file: {exc}") from None
    except msgspec.DecodeError as exc:
        # One bad record (a lone surrogate escape msgspec refuses, say) must not take the object down: when
        # the Records array itself is intact, split it flat and let each record decode (or fail) on its own.
        try:
            return [msgspec.Raw(raw) for raw in split_records_flat(data)]
        except LogFormatError:
            raise LogFormatError(f"invalid JSON: {exc}") from None
    except RecursionError:  # a record nested too deep even to skip: split without recursing, decode one by one
        return [msgspec.Raw(raw) for raw in split_records_flat(data)]


def event_source_of(raw: msgspec.Raw | bytes) -> str | None:
    """The eventSource of a raw record, or None when it has none (or is not an object)."""
    try:
        return _head_decoder.decode(raw).eventSource
    except DECODE_ERRORS:
        return None


def _event_sources(data: bytes, raws: list[msgspec.Raw]) -> list[str | None]:
    """The eventSource of every record, in one decode of the whole object (one call per record if it fails)."""
    try:
        return [head.eventSource for head in _heads_decoder.decode(data).Records]
    except DECODE_ERRORS:  # a record that is not an object, an eventSource that is not UTF-8, ...
        return [event_source_of(raw) for raw in raws]


def decode_record(raw: msgspec.Raw | bytes) -> Record:
    """Typed decode of one record; raises msgspec.ValidationError/DecodeError on wrong shapes."""
    return _record_decoder.decode(raw)


# --- promotion helpers -------------------------------------------------------------------------------------


class _Params(msgspec.Struct, gc=False):
    """The requestParameters keys keytrail promotes; typed decode skips the rest without building a dict."""

    keyId: Any = None
    sourceKeyId: Any = None
    destinationKeyId: Any = None
    targetKeyId: Any = None
    secretId: Any = None
    secretIdList: Any = None
    encryptionContext: Any = None
    sourceEncryptionContext: Any = None


class _Resource(msgspec.Struct, gc=False):
    ARN: Any = None
    arn: Any = None
    type: Any = None


_params_decode = msgspec.json.Decoder(_Params | None).decode
_resources_decode = msgspec.json.Decoder(list[_Resource] | None).decode
_any_decode = _any_decoder.decode


def _nested(raw: msgspec.Raw) -> Any:
    return _any_decode(raw) if raw else None


def _params(raw: msgspec.Raw) -> _Params | None:
    """requestParameters' promoted keys; None when absent, null or not an object."""
    if not raw:
        return None
    try:
        return _params_decode(raw)
    except msgspec.ValidationError:  # valid JSON that is not an object: nothing to promote
        return None


def _resources(raw: msgspec.Raw) -> list[_Resource]:
    """resources[] entries that are objects (anything else in the array is ignored)."""
    if not raw:
        return []
    try:
        return _resources_decode(raw) or []
    except msgspec.ValidationError:  # not a list, or a list with non-object items: keep the objects
        items = _any_decode(raw)
        if not isinstance(items, list):
            return []
        return [
            _Resource(ARN=item.get("ARN"), arn=item.get("arn"), type=item.get("type"))
            for item in items
            if isinstance(item, dict)
        ]


_BOOL_TEXT = {"true": True, "false": False, "True": True, "False": False}


def _as_bool(value: bool | str | None) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    known = _BOOL_TEXT.get(value)  # the spellings CloudTrail writes, without strip/lower
    if known is not None:
        return known
    lowered = value.strip().lower()
    return True if lowered == "true" else False if lowered == "false" else None


def _kms_key_arn_from_resources(resources: list[_Resource]) -> str | None:
    for item in resources:
        arn = item.ARN or item.arn
        if isinstance(arn, str) and (item.type == "AWS::KMS::Key" or (":kms:" in arn and ":key/" in arn)):
            return arn
    return None


def _secret_arns_from_resources(resources: list[_Resource]) -> list[str]:
    found: list[str] = []
    for item in resources:
        arn = item.ARN or item.arn
        if isinstance(arn, str) and (item.type == "AWS::SecretsManager::Secret" or ":secretsmanager:" in arn):
            found.append(arn)
    return found


def _is_bare_key_id(value: str) -> bool:
    return (len(value) == 36 and value.count("-") == 4) or value.startswith("mrk-")


def _key_ref(record: Record, params: _Params | None) -> tuple[str | None, str | None]:
    """(key_arn, key_id) of a KMS event. responseElements is decoded only when nothing else names the key."""
    key_arn = _kms_key_arn_from_resources(_resources(record.resources))
    if key_arn is not None:
        _, found, tail = key_arn.partition(":key/")
        if found:  # the usual case (resources[] names the key): the key id as written does not matter
            return key_arn, tail
    written: str | None = None
    if params is not None:
        for value in (params.keyId, params.sourceKeyId, params.destinationKeyId, params.targetKeyId):
            if value and isinstance(value, str):
                written = value
                break
    if key_arn is None and written:
        region, account = record.awsRegion, record.recipientAccountId
        if written.startswith("arn:") and ":key/" in written:
            key_arn = written
        elif _is_bare_key_id(written) and region and account:
            key_arn = f"arn:aws:kms:{region}:{account}:key/{written}"
    if key_arn is None:
        response = _nested(record.responseElements)
        if isinstance(response, dict):
            metadata = response.get("keyMetadata")
            if isinstance(metadata, dict) and isinstance(metadata.get("arn"), str):
                key_arn = metadata["arn"]
    if key_arn is not None:
        _, found, tail = key_arn.partition(":key/")
        if found:
            return key_arn, tail
    return key_arn, written


def _secret_refs(record: Record, params: _Params | None) -> list[str]:
    refs = _secret_arns_from_resources(_resources(record.resources))
    if params is not None:
        secret_id = params.secretId
        if secret_id and isinstance(secret_id, str):
            refs.append(secret_id)
        id_list = params.secretIdList
        if isinstance(id_list, list):
            refs.extend(item for item in id_list if isinstance(item, str))
    if not refs:
        response = _nested(record.responseElements)
        if isinstance(response, dict):
            arn = response.get("arn") or response.get("aRN") or response.get("ARN")
            if isinstance(arn, str):
                refs.append(arn)
    return refs if len(refs) < 2 else list(dict.fromkeys(refs))  # ordered, unique


def _encryption_context(params: _Params | None) -> dict[str, str] | list[tuple[str, str]] | None:
    """The call's encryption context as Arrow takes a MAP: the dict itself when every value is text."""
    if params is None:
        return None
    context = params.encryptionContext
    if context is None:
        context = params.sourceEncryptionContext
    if context.__class__ is not dict:
        return None
    for value in context.values():
        if value.__class__ is not str:
            return [(k, v if isinstance(v, str) else msgspec.json.encode(v).decode()) for k, v in context.items()]
    return context


def _principal_name(identity: _UserIdentity) -> str | None:
    if identity.userName:
        return identity.userName
    arn = identity.arn or ""
    _, assumed, session = arn.partition(":assumed-role/")
    if assumed:
        return session
    if arn.endswith(":root"):
        return "root"
    if "/" in arn:
        return arn.rsplit("/", 1)[1]
    return identity.invokedBy


_NO_IDENTITY = _UserIdentity()
_NO_SESSION = _SessionContext()
_NO_ISSUER = _SessionIssuer()
_NO_ATTRIBUTES = _SessionAttributes()


def row_of(record: Record, source_object: str) -> tuple[Any, ...]:
    """The normalized row of one record, in `ROW_FIELDS` order (event_id first), as `rows_to_batch` takes it.

    Some columns are left for `rows_to_batch` to finish column-wise, which is far cheaper than per row:
    event_time stays text (event_date None), and the verbatim JSON columns, last, hold the msgspec.Raw slices
    (copied into one Arrow buffer per column instead of one Python str per value).
    """
    identity = record.userIdentity or _NO_IDENTITY
    session = identity.sessionContext or _NO_SESSION
    issuer = session.sessionIssuer or _NO_ISSUER
    mfa = (session.attributes or _NO_ATTRIBUTES).mfaAuthenticated
    read_only = record.readOnly
    source = record.eventSource
    params = _params(record.requestParameters)
    context = _encryption_context(params)
    key_arn = key_id = secret_id = secrets = None
    if source == KMS_SOURCE:
        key_arn, key_id = _key_ref(record, params)
    elif source == SECRETS_SOURCE:
        secrets = _secret_refs(record, params) or None
        secret_id = secrets[0] if secrets else None
    return (
        record.eventID,
        record.eventTime,
        None,  # event_date: derived from event_time column-wise
        source,
        record.eventName,
        record.eventType,
        record.eventCategory,
        record.eventVersion,
        record.awsRegion,
        record.recipientAccountId,
        identity.type,
        identity.arn,
        identity.principalId,
        identity.accountId,
        _principal_name(identity),
        identity.accessKeyId,
        issuer.arn,
        issuer.userName,
        mfa if mfa is None or mfa.__class__ is bool else _as_bool(mfa),
        identity.invokedBy,
        record.sourceIPAddress,
        record.userAgent,
        record.vpcEndpointId,
        record.errorCode,
        record.errorMessage,
        read_only if read_only is None or read_only.__class__ is bool else _as_bool(read_only),
        record.requestID,
        record.sharedEventID,
        key_arn,
        key_id,
        secret_id,
        secrets,
        context,
        source_object,
        record.requestParameters,
        record.responseElements,
        record.additionalEventData,
        record.serviceEventDetails,
        record.resources,
    )


JSON_COLUMNS: tuple[str, ...] = (
    "request_parameters",
    "response_elements",
    "additional_event_data",
    "service_event_details",
    "resources",
)
# A `row_of` tuple: every other column in COLUMNS order (event_time as text, event_date None), then the
# verbatim JSON parts as msgspec.Raw. The first part converts to Arrow in one call as a struct.
ROW_FIELDS: tuple[str, ...] = tuple(name for name in COLUMNS if name not in JSON_COLUMNS) + JSON_COLUMNS
_SCALARS = len(ROW_FIELDS) - len(JSON_COLUMNS)
_ROW_STRUCT = pa.struct(
    [
        pa.field(field.name, pa.string() if field.name == "event_time" else field.type)
        for field in EVENTS_SCHEMA
        if field.name not in JSON_COLUMNS
    ]
)
_SCALAR_PART = operator.itemgetter(slice(0, _SCALARS))
_JSON_PART = operator.itemgetter(*range(_SCALARS, len(ROW_FIELDS)))


def parse_event_times(texts: pa.Array) -> pa.Array:
    """CloudTrail eventTime text ('2023-07-10T11:42:00Z', sometimes with fractions) -> timestamp[us, UTC]."""
    whole = pc.utf8_slice_codeunits(texts, 0, 19)
    parsed = pc.strptime(whole, format="%Y-%m-%dT%H:%M:%S", unit="us", error_is_null=True)
    return pc.assume_timezone(parsed, "UTC").cast(pa.timestamp("us", tz="UTC"))


_JSON_NULL = b"null"
_JSON_NULL_TEXT = pa.scalar("null", pa.string())


def _json_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    text = str(value, "utf-8")
    return None if text in ("", "null") else text


def json_column(values: Sequence[Any]) -> pa.Array:
    """Verbatim JSON text column from msgspec.Raw slices (empty = absent; JSON null = null) or str values.

    Raw slices are joined into one buffer and wrapped as a string array: no Python str per value, and a
    handful of Arrow calls per column whatever its length (small log objects make many small batches).
    """
    parts = [value or _JSON_NULL for value in values]  # absent (empty Raw) -> null, like JSON null
    try:
        data = b"".join(parts)
    except TypeError:  # str values (rows built by hand): the plain path
        return pa.array([_json_text(value) for value in values], type=pa.string())
    offsets = pa.array(itertools.accumulate(map(len, parts), initial=0), type=pa.int32()).buffers()[1]
    texts = pa.StringArray.from_buffers(len(parts), offsets, pa.py_buffer(data))
    texts.validate(full=True)  # UTF-8 (rows_from_log already rejected records that are not)
    valid = pc.not_equal(texts, _JSON_NULL_TEXT).buffers()[1]
    return pa.StringArray.from_buffers(len(parts), offsets, pa.py_buffer(data), valid)


def rows_to_batch(rows: Sequence[tuple[Any, ...]]) -> pa.RecordBatch:
    """Column-wise build of an EVENTS_SCHEMA batch from `row_of` tuples.

    One struct conversion for the scalar columns (far fewer Arrow calls than one per column, which matters
    for the many small batches small log objects make), one buffer per verbatim JSON column.
    """
    scalars = pa.array(map(_SCALAR_PART, rows), type=_ROW_STRUCT, size=len(rows))
    by_name = dict(zip(_ROW_STRUCT.names, scalars.flatten(), strict=True))
    times = parse_event_times(by_name["event_time"])
    by_name["event_time"] = times
    by_name["event_date"] = times.cast(pa.date32())
    parts = list(zip(*map(_JSON_PART, rows), strict=True)) if rows else [() for _ in JSON_COLUMNS]
    for name, values in zip(JSON_COLUMNS, parts, strict=True):
        by_name[name] = json_column(values)
    return pa.RecordBatch.from_arrays([by_name[name] for name in COLUMNS], schema=_BATCH_SCHEMA)


_BATCH_SCHEMA = EVENTS_SCHEMA.with_metadata(None)


# A log object holds what happened before it was written: CloudTrail delivers within minutes, and a day of slack
# absorbs clock skew. Later than that (a year-9999 record, say) is a bad record, not an event.
WRITE_SLACK = dt.timedelta(days=1)
_SECONDS = "%Y-%m-%dT%H:%M:%S"
_from_iso = dt.datetime.fromisoformat


class EventTimeRange:
    """The eventTimes a log object's records may carry: [times.EARLIEST, `latest`), where `latest` is a day after
    the object was written (times.LATEST when that is unknown).

    `utc_text` is on ingest's hot path (once per kept record). CloudTrail writes `YYYY-MM-DDTHH:MM:SSZ`, text
    that sorts like the instant it spells: that shape is range-checked with two string comparisons, and only a
    record with an offset pays for a full parse.
    """

    __slots__ = ("_high", "_low", "_why", "latest")

    def __init__(self, latest: dt.datetime = LATEST, why: str = "") -> None:
        self.latest = min(latest, LATEST)
        self._low = EARLIEST.strftime(_SECONDS)
        self._high = self.latest.strftime(_SECONDS)
        self._why = why

    @classmethod
    def for_object(cls, written: dt.datetime | None) -> EventTimeRange:
        """The range for an object written at `written` (S3 LastModified, a file's mtime), or unknown."""
        if written is None:
            return _ANY_TIME
        written = parse_timestamp(written)
        if written >= LATEST - WRITE_SLACK:
            return _ANY_TIME
        return cls(written + WRITE_SLACK, f" (a day after its log object was written, {display(written)})")

    def utc_text(self, text: str) -> str:
        """`text` as UTC eventTime text (`YYYY-MM-DDTHH:MM:SS...Z`, what `parse_event_times` reads column-wise):
        itself when already UTC, else converted. ValueError says why the record has no usable time."""
        size = len(text)
        # The fixed separators in one slice: fromisoformat alone would also take '2024-05-08 10:15:00'.
        if size < 19 or text[4:17:3] != "--T::":
            raise ValueError(f"unparseable eventTime {text!r}")
        if (size == 20 and text[19] == "Z") or size == 19 or (text[19] == "." and text[-1] == "Z"):
            head = text[:19]  # UTC already (or no zone: UTC), the usual case
            try:
                _from_iso(head)
            except ValueError:
                raise ValueError(f"unparseable eventTime {text!r}") from None
            if self._low <= head < self._high:
                return text
            raise ValueError(self._outside(text))
        try:
            moment = parse_timestamp(text)  # an offset (+05:00): the instant it names, in UTC
        except ValueError:
            raise ValueError(f"unparseable eventTime {text!r}") from None
        if not EARLIEST <= moment < self.latest:
            raise ValueError(self._outside(text))
        return moment.strftime(_SECONDS) + (f".{moment.microsecond:06d}Z" if moment.microsecond else "Z")

    def _outside(self, text: str) -> str:
        return f"eventTime {text!r} is outside {display(EARLIEST)} .. {display(self.latest)}{self._why}"


_ANY_TIME = EventTimeRange()


def _utf8_problem(record: Record) -> str | None:
    """Why a record's verbatim JSON parts are not valid UTF-8 (only checked for non-ASCII log objects)."""
    for raw in (
        record.requestParameters,
        record.responseElements,
        record.additionalEventData,
        record.serviceEventDetails,
        record.resources,
    ):
        try:
            str(raw, "utf-8")
        except UnicodeDecodeError as exc:
            return f"invalid UTF-8: {exc}"
    return None


@dataclass
class LogRows:
    """What one log object yields: kept rows, how many records it held, and the rejected ones."""

    rows: list[tuple[Any, ...]]
    seen: int
    rejected: list[RejectedRecord]


def rows_from_log(
    data: bytes, source_object: str, event_sources: Iterable[str], written: dt.datetime | None = None
) -> LogRows:
    """Decode a (gunzipped) CloudTrail log object and normalize the events of `event_sources`.

    Raises LogFormatError when the object as a whole is unreadable; a bad record is rejected on its own, and so is
    a record whose eventTime is outside `EventTimeRange.for_object(written)` (when the object was written).
    """
    wanted = frozenset(event_sources)
    when = EventTimeRange.for_object(written)
    try:
        # The usual case, in one pass: every record decodes as a Record. ~15% cheaper than splitting the
        # array, reading each record's eventSource and decoding the kept ones, even though the other
        # services' records get decoded too.
        records = _records_decoder.decode(data).Records
    except DECODE_ERRORS:
        # Some record has another shape (maybe one we do not even keep), or the object is not a log file:
        # record by record, so exactly the bad records are rejected (and the error says why).
        return _rows_record_by_record(data, source_object, wanted, when)
    # msgspec does not check UTF-8 inside the nested parts it keeps raw; an ASCII object needs no check.
    check_utf8 = not data.isascii()
    rows: list[tuple[Any, ...]] = []
    rejected: list[RejectedRecord] = []
    raws: list[msgspec.Raw] | None = None  # split only to quarantine a rejected record verbatim (rare)
    for index, record in enumerate(records):
        if record.eventSource not in wanted:
            continue
        problem = _add_row(rows, record, source_object, check_utf8, when)
        if problem is not None:
            raws = raws if raws is not None else split_records(data)
            rejected.append(RejectedRecord(index, problem, bytes(raws[index])))
    return LogRows(rows=rows, seen=len(records), rejected=rejected)


def _add_row(
    rows: list[tuple[Any, ...]], record: Record, source_object: str, check_utf8: bool, when: EventTimeRange
) -> str | None:
    """Append a kept record's row; or say why it cannot become one."""
    try:
        record.eventTime = when.utc_text(record.eventTime)
    except ValueError as exc:
        return str(exc)
    utf8 = _utf8_problem(record) if check_utf8 else None
    if utf8 is not None:
        return f"cannot normalize: {utf8}"
    try:
        rows.append(row_of(record, source_object))
    except RECORD_ERRORS as exc:
        return f"cannot normalize: {record_fault(exc)}"
    return None


def _rows_record_by_record(data: bytes, source_object: str, wanted: frozenset[str], when: EventTimeRange) -> LogRows:
    """`rows_from_log` one record at a time: only records of a wanted source are decoded as a Record."""
    raws = split_records(data)
    check_utf8 = not data.isascii()
    rows: list[tuple[Any, ...]] = []
    rejected: list[RejectedRecord] = []
    decode = _record_decoder.decode
    for index, source in enumerate(_event_sources(data, raws)):
        if source is not None and source not in wanted:
            continue
        raw = raws[index]
        try:
            record = decode(raw)
        except DECODE_ERRORS as exc:
            kind = "wrong field type" if isinstance(exc, msgspec.ValidationError) else "cannot decode"
            rejected.append(RejectedRecord(index, f"{kind}: {record_fault(exc)}", bytes(raw)))
            continue
        if record.eventSource not in wanted:
            continue
        problem = _add_row(rows, record, source_object, check_utf8, when)
        if problem is not None:
            rejected.append(RejectedRecord(index, problem, bytes(raw)))
    return LogRows(rows=rows, seen=len(raws), rejected=rejected)


def normalize(record: dict[str, Any], source_object: str = "inline") -> dict[str, Any]:
    """One CloudTrail record (as parsed JSON) -> one normalized row as a dict of Python values.

    Goes through exactly the code path ingest uses, so tests and YAML cases see what the lake stores.
    """
    return normalize_many([record], source_object).to_pylist()[0]


def normalize_many(records: Iterable[dict[str, Any]], source_object: str = "inline") -> pa.Table:
    """Normalize parsed records (any event source) to an EVENTS_SCHEMA table; raises on a bad record."""
    rows = []
    for record in records:
        decoded = decode_record(msgspec.json.encode(record))
        decoded.eventTime = _ANY_TIME.utc_text(decoded.eventTime)
        rows.append(row_of(decoded, source_object))
    return pa.Table.from_batches([rows_to_batch(rows)])
