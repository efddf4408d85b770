from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LogEntry(_message.Message):
    __slots__ = ("index", "term", "kind", "payload", "crc")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CRC_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    kind: int
    payload: bytes
    crc: int
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., kind: _Optional[int] = ..., payload: _Optional[bytes] = ..., crc: _Optional[int] = ...) -> None: ...

class Append(_message.Message):
    __slots__ = ("term", "sender", "prev_index", "prev_term", "entries", "commit", "epoch", "isr", "sent_at_ms", "fence")
    TERM_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    PREV_INDEX_FIELD_NUMBER: _ClassVar[int]
    PREV_TERM_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ISR_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    FENCE_FIELD_NUMBER: _ClassVar[int]
    term: int
    sender: int
    prev_index: int
    prev_term: int
    entries: _containers.RepeatedCompositeFieldContainer[LogEntry]
    commit: int
    epoch: int
    isr: _containers.RepeatedScalarFieldContainer[int]
    sent_at_ms: int
    fence: int
    def __init__(self, term: _Optional[int] = ..., sender: _Optional[int] = ..., prev_index: _Optional[int] = ..., prev_term: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[LogEntry, _Mapping]]] = ..., commit: _Optional[int] = ..., epoch: _Optional[int] = ..., isr: _Optional[_Iterable[int]] = ..., sent_at_ms: _Optional[int] = ..., fence: _Optional[int] = ...) -> None: ...

class AppendReply(_message.Message):
    __slots__ = ("term", "sender", "success", "match_index", "reject_index", "hint_index", "echo_sent_at_ms", "fence", "wall_ms")
    TERM_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    REJECT_INDEX_FIELD_NUMBER: _ClassVar[int]
    HINT_INDEX_FIELD_NUMBER: _ClassVar[int]
    ECHO_SENT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    FENCE_FIELD_NUMBER: _ClassVar[int]
    WALL_MS_FIELD_NUMBER: _ClassVar[int]
    term: int
    sender: int
    success: bool
    match_index: int
    reject_index: int
    hint_index: int
    echo_sent_at_ms: int
    fence: int
    wall_ms: int
    def __init__(self, term: _Optional[int] = ..., sender: _Optional[int] = ..., success: _Optional[bool] = ..., match_index: _Optional[int] = ..., reject_index: _Optional[int] = ..., hint_index: _Optional[int] = ..., echo_sent_at_ms: _Optional[int] = ..., fence: _Optional[int] = ..., wall_ms: _Optional[int] = ...) -> None: ...

class VoteRequest(_message.Message):
    __slots__ = ("term", "sender", "pre_vote", "campaign", "last_log_term", "last_log_index", "epoch", "epoch_term", "transfer_from")
    TERM_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    PRE_VOTE_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCH_TERM_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FROM_FIELD_NUMBER: _ClassVar[int]
    term: int
    sender: int
    pre_vote: bool
    campaign: int
    last_log_term: int
    last_log_index: int
    epoch: int
    epoch_term: int
    transfer_from: int
    def __init__(self, term: _Optional[int] = ..., sender: _Optional[int] = ..., pre_vote: _Optional[bool] = ..., campaign: _Optional[int] = ..., last_log_term: _Optional[int] = ..., last_log_index: _Optional[int] = ..., epoch: _Optional[int] = ..., epoch_term: _Optional[int] = ..., transfer_from: _Optional[int] = ...) -> None: ...

class VoteReply(_message.Message):
    __slots__ = ("term", "sender", "pre_vote", "campaign", "granted", "last_log_term", "last_log_index", "epoch", "epoch_term", "isr", "restarted", "has_live_leader", "leader_id")
    TERM_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    PRE_VOTE_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCH_TERM_FIELD_NUMBER: _ClassVar[int]
    ISR_FIELD_NUMBER: _ClassVar[int]
    RESTARTED_FIELD_NUMBER: _ClassVar[int]
    HAS_LIVE_LEADER_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    term: int
    sender: int
    pre_vote: bool
    campaign: int
    granted: bool
    last_log_term: int
    last_log_index: int
    epoch: int
    epoch_term: int
    isr: _containers.RepeatedScalarFieldContainer[int]
    restarted: bool
    has_live_leader: bool
    leader_id: int
    def __init__(self, term: _Optional[int] = ..., sender: _Optional[int] = ..., pre_vote: _Optional[bool] = ..., campaign: _Optional[int] = ..., granted: _Optional[bool] = ..., last_log_term: _Optional[int] = ..., last_log_index: _Optional[int] = ..., epoch: _Optional[int] = ..., epoch_term: _Optional[int] = ..., isr: _Optional[_Iterable[int]] = ..., restarted: _Optional[bool] = ..., has_live_leader: _Optional[bool] = ..., leader_id: _Optional[int] = ...) -> None: ...

class TimeoutNow(_message.Message):
    __slots__ = ("term", "sender")
    TERM_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    term: int
    sender: int
    def __init__(self, term: _Optional[int] = ..., sender: _Optional[int] = ...) -> None: ...

class PeerMessage(_message.Message):
    __slots__ = ("append", "append_reply", "vote_request", "vote_reply", "timeout_now")
    APPEND_FIELD_NUMBER: _ClassVar[int]
    APPEND_REPLY_FIELD_NUMBER: _ClassVar[int]
    VOTE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    VOTE_REPLY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_NOW_FIELD_NUMBER: _ClassVar[int]
    append: Append
    append_reply: AppendReply
    vote_request: VoteRequest
    vote_reply: VoteReply
    timeout_now: TimeoutNow
    def __init__(self, append: _Optional[_Union[Append, _Mapping]] = ..., append_reply: _Optional[_Union[AppendReply, _Mapping]] = ..., vote_request: _Optional[_Union[VoteRequest, _Mapping]] = ..., vote_reply: _Optional[_Union[VoteReply, _Mapping]] = ..., timeout_now: _Optional[_Union[TimeoutNow, _Mapping]] = ...) -> None: ...

class PeerBatch(_message.Message):
    __slots__ = ("from_id", "messages")
    FROM_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    from_id: int
    messages: _containers.RepeatedCompositeFieldContainer[PeerMessage]
    def __init__(self, from_id: _Optional[int] = ..., messages: _Optional[_Iterable[_Union[PeerMessage, _Mapping]]] = ...) -> None: ...

class Delivered(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("term", "sender", "index", "index_term", "config", "data", "last", "size", "sha256")
    TERM_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    INDEX_TERM_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    term: int
    sender: int
    index: int
    index_term: int
    config: LogEntry
    data: bytes
    last: bool
    size: int
    sha256: bytes
    def __init__(self, term: _Optional[int] = ..., sender: _Optional[int] = ..., index: _Optional[int] = ..., index_term: _Optional[int] = ..., config: _Optional[_Union[LogEntry, _Mapping]] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ..., size: _Optional[int] = ..., sha256: _Optional[bytes] = ...) -> None: ...

class SnapshotAck(_message.Message):
    __slots__ = ("staged",)
    STAGED_FIELD_NUMBER: _ClassVar[int]
    staged: bool
    def __init__(self, staged: _Optional[bool] = ...) -> None: ...

class AddMemberRequest(_message.Message):
    __slots__ = ("id", "address")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    id: int
    address: str
    def __init__(self, id: _Optional[int] = ..., address: _Optional[str] = ...) -> None: ...

class RemoveMemberRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class TransferLeaderRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class ForceLeaderRequest(_message.Message):
    __slots__ = ("accept_data_loss",)
    ACCEPT_DATA_LOSS_FIELD_NUMBER: _ClassVar[int]
    accept_data_loss: bool
    def __init__(self, accept_data_loss: _Optional[bool] = ...) -> None: ...

class AdminReply(_message.Message):
    __slots__ = ("message", "index")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    message: str
    index: int
    def __init__(self, message: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

class SaveSnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
