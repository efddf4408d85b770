from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateAccountRequest(_message.Message):
    __slots__ = ("username", "password", "request_id")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    request_id: str
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateAccountResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LoginRequest(_message.Message):
    __slots__ = ("username", "password", "request_id", "client_label")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_LABEL_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    request_id: str
    client_label: str
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ..., request_id: _Optional[str] = ..., client_label: _Optional[str] = ...) -> None: ...

class LoginResponse(_message.Message):
    __slots__ = ("session_token", "unread_count", "last_message_id")
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    UNREAD_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    session_token: str
    unread_count: int
    last_message_id: int
    def __init__(self, session_token: _Optional[str] = ..., unread_count: _Optional[int] = ..., last_message_id: _Optional[int] = ...) -> None: ...

class LogoutRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class LogoutResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAccountsRequest(_message.Message):
    __slots__ = ("pattern", "page_size", "page_token")
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    pattern: str
    page_size: int
    page_token: str
    def __init__(self, pattern: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAccountsResponse(_message.Message):
    __slots__ = ("usernames", "next_page_token")
    USERNAMES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    usernames: _containers.RepeatedScalarFieldContainer[str]
    next_page_token: str
    def __init__(self, usernames: _Optional[_Iterable[str]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SendMessageRequest(_message.Message):
    __slots__ = ("recipient", "body", "request_id")
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    recipient: str
    body: str
    request_id: str
    def __init__(self, recipient: _Optional[str] = ..., body: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class SendMessageResponse(_message.Message):
    __slots__ = ("message_id", "recipient_online")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_ONLINE_FIELD_NUMBER: _ClassVar[int]
    message_id: int
    recipient_online: bool
    def __init__(self, message_id: _Optional[int] = ..., recipient_online: _Optional[bool] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("id", "sender", "recipient", "body", "sent_at_unix_ms", "read")
    ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    id: int
    sender: str
    recipient: str
    body: str
    sent_at_unix_ms: int
    read: bool
    def __init__(self, id: _Optional[int] = ..., sender: _Optional[str] = ..., recipient: _Optional[str] = ..., body: _Optional[str] = ..., sent_at_unix_ms: _Optional[int] = ..., read: _Optional[bool] = ...) -> None: ...

class ReadMessagesRequest(_message.Message):
    __slots__ = ("limit", "request_id")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    limit: int
    request_id: str
    def __init__(self, limit: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class ReadMessagesResponse(_message.Message):
    __slots__ = ("messages", "remaining_unread")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    REMAINING_UNREAD_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    remaining_unread: int
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., remaining_unread: _Optional[int] = ...) -> None: ...

class MarkReadRequest(_message.Message):
    __slots__ = ("message_ids", "request_id")
    MESSAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    message_ids: _containers.RepeatedScalarFieldContainer[int]
    request_id: str
    def __init__(self, message_ids: _Optional[_Iterable[int]] = ..., request_id: _Optional[str] = ...) -> None: ...

class MarkReadResponse(_message.Message):
    __slots__ = ("marked_count",)
    MARKED_COUNT_FIELD_NUMBER: _ClassVar[int]
    marked_count: int
    def __init__(self, marked_count: _Optional[int] = ...) -> None: ...

class DeleteMessagesRequest(_message.Message):
    __slots__ = ("message_ids", "request_id")
    MESSAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    message_ids: _containers.RepeatedScalarFieldContainer[int]
    request_id: str
    def __init__(self, message_ids: _Optional[_Iterable[int]] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteMessagesResponse(_message.Message):
    __slots__ = ("deleted_count",)
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    def __init__(self, deleted_count: _Optional[int] = ...) -> None: ...

class DeleteAccountRequest(_message.Message):
    __slots__ = ("password", "request_id")
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    password: str
    request_id: str
    def __init__(self, password: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteAccountResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("after_id",)
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    after_id: int
    def __init__(self, after_id: _Optional[int] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("partner", "before_id", "limit")
    PARTNER_FIELD_NUMBER: _ClassVar[int]
    BEFORE_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    partner: str
    before_id: int
    limit: int
    def __init__(self, partner: _Optional[str] = ..., before_id: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class HistoryResponse(_message.Message):
    __slots__ = ("messages", "next_before_id")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_BEFORE_ID_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    next_before_id: int
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., next_before_id: _Optional[int] = ...) -> None: ...

class SessionInfo(_message.Message):
    __slots__ = ("session_id", "created_unix_ms", "last_used_unix_ms", "client_label", "current")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_LABEL_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    created_unix_ms: int
    last_used_unix_ms: int
    client_label: str
    current: bool
    def __init__(self, session_id: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., last_used_unix_ms: _Optional[int] = ..., client_label: _Optional[str] = ..., current: _Optional[bool] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[SessionInfo]
    def __init__(self, sessions: _Optional[_Iterable[_Union[SessionInfo, _Mapping]]] = ...) -> None: ...

class EndSessionRequest(_message.Message):
    __slots__ = ("session_id", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class EndSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LeaderInfo(_message.Message):
    __slots__ = ("leader_id", "leader_address", "term")
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    leader_id: int
    leader_address: str
    term: int
    def __init__(self, leader_id: _Optional[int] = ..., leader_address: _Optional[str] = ..., term: _Optional[int] = ...) -> None: ...

class SubscribeEvent(_message.Message):
    __slots__ = ("message", "leader")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    message: Message
    leader: LeaderInfo
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ..., leader: _Optional[_Union[LeaderInfo, _Mapping]] = ...) -> None: ...

class GetClusterStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Member(_message.Message):
    __slots__ = ("id", "address", "role", "in_sync", "match_index", "reachable", "clock_offset_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    MATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    CLOCK_OFFSET_MS_FIELD_NUMBER: _ClassVar[int]
    id: int
    address: str
    role: str
    in_sync: bool
    match_index: int
    reachable: bool
    clock_offset_ms: int
    def __init__(self, id: _Optional[int] = ..., address: _Optional[str] = ..., role: _Optional[str] = ..., in_sync: _Optional[bool] = ..., match_index: _Optional[int] = ..., reachable: _Optional[bool] = ..., clock_offset_ms: _Optional[int] = ...) -> None: ...

class ClusterStatus(_message.Message):
    __slots__ = ("node_id", "role", "term", "leader_id", "leader_address", "commit_index", "members", "config_epoch", "min_insync", "mode", "fault", "version", "applied_index")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_EPOCH_FIELD_NUMBER: _ClassVar[int]
    MIN_INSYNC_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FAULT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    role: str
    term: int
    leader_id: int
    leader_address: str
    commit_index: int
    members: _containers.RepeatedCompositeFieldContainer[Member]
    config_epoch: int
    min_insync: int
    mode: str
    fault: str
    version: str
    applied_index: int
    def __init__(self, node_id: _Optional[int] = ..., role: _Optional[str] = ..., term: _Optional[int] = ..., leader_id: _Optional[int] = ..., leader_address: _Optional[str] = ..., commit_index: _Optional[int] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., config_epoch: _Optional[int] = ..., min_insync: _Optional[int] = ..., mode: _Optional[str] = ..., fault: _Optional[str] = ..., version: _Optional[str] = ..., applied_index: _Optional[int] = ...) -> None: ...

class ClientFrame(_message.Message):
    __slots__ = ("request_id", "send_message", "read_messages", "mark_read", "delete_messages", "list_accounts", "logout", "delete_account", "subscribe", "history", "list_sessions", "end_session")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SEND_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    READ_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MARK_READ_FIELD_NUMBER: _ClassVar[int]
    DELETE_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    LIST_ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    LOGOUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    LIST_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    END_SESSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    send_message: SendMessageRequest
    read_messages: ReadMessagesRequest
    mark_read: MarkReadRequest
    delete_messages: DeleteMessagesRequest
    list_accounts: ListAccountsRequest
    logout: LogoutRequest
    delete_account: DeleteAccountRequest
    subscribe: SubscribeRequest
    history: HistoryRequest
    list_sessions: ListSessionsRequest
    end_session: EndSessionRequest
    def __init__(self, request_id: _Optional[str] = ..., send_message: _Optional[_Union[SendMessageRequest, _Mapping]] = ..., read_messages: _Optional[_Union[ReadMessagesRequest, _Mapping]] = ..., mark_read: _Optional[_Union[MarkReadRequest, _Mapping]] = ..., delete_messages: _Optional[_Union[DeleteMessagesRequest, _Mapping]] = ..., list_accounts: _Optional[_Union[ListAccountsRequest, _Mapping]] = ..., logout: _Optional[_Union[LogoutRequest, _Mapping]] = ..., delete_account: _Optional[_Union[DeleteAccountRequest, _Mapping]] = ..., subscribe: _Optional[_Union[SubscribeRequest, _Mapping]] = ..., history: _Optional[_Union[HistoryRequest, _Mapping]] = ..., list_sessions: _Optional[_Union[ListSessionsRequest, _Mapping]] = ..., end_session: _Optional[_Union[EndSessionRequest, _Mapping]] = ...) -> None: ...

class Subscribed(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CallError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ServerFrame(_message.Message):
    __slots__ = ("request_id", "send_message", "read_messages", "mark_read", "delete_messages", "list_accounts", "logout", "delete_account", "subscribe", "error", "message", "leader", "history", "list_sessions", "end_session")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SEND_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    READ_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MARK_READ_FIELD_NUMBER: _ClassVar[int]
    DELETE_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    LIST_ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    LOGOUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    LIST_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    END_SESSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    send_message: SendMessageResponse
    read_messages: ReadMessagesResponse
    mark_read: MarkReadResponse
    delete_messages: DeleteMessagesResponse
    list_accounts: ListAccountsResponse
    logout: LogoutResponse
    delete_account: DeleteAccountResponse
    subscribe: Subscribed
    error: CallError
    message: Message
    leader: LeaderInfo
    history: HistoryResponse
    list_sessions: ListSessionsResponse
    end_session: EndSessionResponse
    def __init__(self, request_id: _Optional[str] = ..., send_message: _Optional[_Union[SendMessageResponse, _Mapping]] = ..., read_messages: _Optional[_Union[ReadMessagesResponse, _Mapping]] = ..., mark_read: _Optional[_Union[MarkReadResponse, _Mapping]] = ..., delete_messages: _Optional[_Union[DeleteMessagesResponse, _Mapping]] = ..., list_accounts: _Optional[_Union[ListAccountsResponse, _Mapping]] = ..., logout: _Optional[_Union[LogoutResponse, _Mapping]] = ..., delete_account: _Optional[_Union[DeleteAccountResponse, _Mapping]] = ..., subscribe: _Optional[_Union[Subscribed, _Mapping]] = ..., error: _Optional[_Union[CallError, _Mapping]] = ..., message: _Optional[_Union[Message, _Mapping]] = ..., leader: _Optional[_Union[LeaderInfo, _Mapping]] = ..., history: _Optional[_Union[HistoryResponse, _Mapping]] = ..., list_sessions: _Optional[_Union[ListSessionsResponse, _Mapping]] = ..., end_session: _Optional[_Union[EndSessionResponse, _Mapping]] = ...) -> None: ...
