from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClientFrame(_message.Message):
    __slots__ = ("client", "action", "target", "body", "is_target_client", "request_id", "seq", "user")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    IS_TARGET_CLIENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    client: str
    action: str
    target: str
    body: bytes
    is_target_client: bool
    request_id: bytes
    seq: int
    user: str
    def __init__(self, client: _Optional[str] = ..., action: _Optional[str] = ..., target: _Optional[str] = ..., body: _Optional[bytes] = ..., is_target_client: _Optional[bool] = ..., request_id: _Optional[bytes] = ..., seq: _Optional[int] = ..., user: _Optional[str] = ...) -> None: ...

class ClientMessage(_message.Message):
    __slots__ = ("action", "target", "body", "sender", "is_target_client", "request_id")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    IS_TARGET_CLIENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    action: str
    target: str
    body: bytes
    sender: str
    is_target_client: bool
    request_id: bytes
    def __init__(self, action: _Optional[str] = ..., target: _Optional[str] = ..., body: _Optional[bytes] = ..., sender: _Optional[str] = ..., is_target_client: _Optional[bool] = ..., request_id: _Optional[bytes] = ...) -> None: ...

class GatewayBatch(_message.Message):
    __slots__ = ("gateway", "items", "received")
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    gateway: str
    items: _containers.RepeatedCompositeFieldContainer[GatewayItem]
    received: int
    def __init__(self, gateway: _Optional[str] = ..., items: _Optional[_Iterable[_Union[GatewayItem, _Mapping]]] = ..., received: _Optional[int] = ...) -> None: ...

class GatewayItem(_message.Message):
    __slots__ = ("hello", "heartbeat", "connected", "disconnected", "away", "resume", "frames", "admin_query", "resync", "resent")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    DISCONNECTED_FIELD_NUMBER: _ClassVar[int]
    AWAY_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    ADMIN_QUERY_FIELD_NUMBER: _ClassVar[int]
    RESYNC_FIELD_NUMBER: _ClassVar[int]
    RESENT_FIELD_NUMBER: _ClassVar[int]
    hello: GatewayHello
    heartbeat: Heartbeat
    connected: ClientConnected
    disconnected: str
    away: str
    resume: ResumeRequest
    frames: ClientFrames
    admin_query: AdminQuery
    resync: Resync
    resent: Resent
    def __init__(self, hello: _Optional[_Union[GatewayHello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., connected: _Optional[_Union[ClientConnected, _Mapping]] = ..., disconnected: _Optional[str] = ..., away: _Optional[str] = ..., resume: _Optional[_Union[ResumeRequest, _Mapping]] = ..., frames: _Optional[_Union[ClientFrames, _Mapping]] = ..., admin_query: _Optional[_Union[AdminQuery, _Mapping]] = ..., resync: _Optional[_Union[Resync, _Mapping]] = ..., resent: _Optional[_Union[Resent, _Mapping]] = ...) -> None: ...

class Resent(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Resync(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AdminQuery(_message.Message):
    __slots__ = ("id", "search", "after")
    ID_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    id: int
    search: str
    after: str
    def __init__(self, id: _Optional[int] = ..., search: _Optional[str] = ..., after: _Optional[str] = ...) -> None: ...

class ClientConnected(_message.Message):
    __slots__ = ("client", "user", "session_hash")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    SESSION_HASH_FIELD_NUMBER: _ClassVar[int]
    client: str
    user: str
    session_hash: bytes
    def __init__(self, client: _Optional[str] = ..., user: _Optional[str] = ..., session_hash: _Optional[bytes] = ...) -> None: ...

class ResumeRequest(_message.Message):
    __slots__ = ("link", "session_hash", "new_session_hash", "user", "positions")
    LINK_FIELD_NUMBER: _ClassVar[int]
    SESSION_HASH_FIELD_NUMBER: _ClassVar[int]
    NEW_SESSION_HASH_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    link: str
    session_hash: bytes
    new_session_hash: bytes
    user: str
    positions: _containers.RepeatedCompositeFieldContainer[Position]
    def __init__(self, link: _Optional[str] = ..., session_hash: _Optional[bytes] = ..., new_session_hash: _Optional[bytes] = ..., user: _Optional[str] = ..., positions: _Optional[_Iterable[_Union[Position, _Mapping]]] = ...) -> None: ...

class Position(_message.Message):
    __slots__ = ("epoch", "offset")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    epoch: str
    offset: int
    def __init__(self, epoch: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class ClientFrames(_message.Message):
    __slots__ = ("client", "action", "target", "body", "is_target_client", "request_id", "first_seq")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    IS_TARGET_CLIENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    client: _containers.RepeatedScalarFieldContainer[str]
    action: _containers.RepeatedScalarFieldContainer[str]
    target: _containers.RepeatedScalarFieldContainer[str]
    body: _containers.RepeatedScalarFieldContainer[bytes]
    is_target_client: _containers.RepeatedScalarFieldContainer[bool]
    request_id: _containers.RepeatedScalarFieldContainer[bytes]
    first_seq: int
    def __init__(self, client: _Optional[_Iterable[str]] = ..., action: _Optional[_Iterable[str]] = ..., target: _Optional[_Iterable[str]] = ..., body: _Optional[_Iterable[bytes]] = ..., is_target_client: _Optional[_Iterable[bool]] = ..., request_id: _Optional[_Iterable[bytes]] = ..., first_seq: _Optional[int] = ...) -> None: ...

class GatewayHello(_message.Message):
    __slots__ = ("index", "clients")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    index: int
    clients: _containers.RepeatedCompositeFieldContainer[ClientRooms]
    def __init__(self, index: _Optional[int] = ..., clients: _Optional[_Iterable[_Union[ClientRooms, _Mapping]]] = ...) -> None: ...

class ClientRooms(_message.Message):
    __slots__ = ("client", "rooms", "user", "session_hash")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    ROOMS_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    SESSION_HASH_FIELD_NUMBER: _ClassVar[int]
    client: str
    rooms: _containers.RepeatedScalarFieldContainer[str]
    user: str
    session_hash: bytes
    def __init__(self, client: _Optional[str] = ..., rooms: _Optional[_Iterable[str]] = ..., user: _Optional[str] = ..., session_hash: _Optional[bytes] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("acked", "stats")
    ACKED_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    acked: int
    stats: ProcessStats
    def __init__(self, acked: _Optional[int] = ..., stats: _Optional[_Union[ProcessStats, _Mapping]] = ...) -> None: ...

class ProcessStats(_message.Message):
    __slots__ = ("role", "pid", "started_at", "restarts", "cpu_seconds", "rss_bytes", "connections", "frames_in", "frames_out", "errors", "drops")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_IN_FIELD_NUMBER: _ClassVar[int]
    FRAMES_OUT_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    DROPS_FIELD_NUMBER: _ClassVar[int]
    role: str
    pid: int
    started_at: float
    restarts: int
    cpu_seconds: float
    rss_bytes: int
    connections: int
    frames_in: int
    frames_out: int
    errors: int
    drops: int
    def __init__(self, role: _Optional[str] = ..., pid: _Optional[int] = ..., started_at: _Optional[float] = ..., restarts: _Optional[int] = ..., cpu_seconds: _Optional[float] = ..., rss_bytes: _Optional[int] = ..., connections: _Optional[int] = ..., frames_in: _Optional[int] = ..., frames_out: _Optional[int] = ..., errors: _Optional[int] = ..., drops: _Optional[int] = ...) -> None: ...

class GatewayOut(_message.Message):
    __slots__ = ("ops", "seq", "epoch")
    OPS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[GatewayOp]
    seq: int
    epoch: str
    def __init__(self, ops: _Optional[_Iterable[_Union[GatewayOp, _Mapping]]] = ..., seq: _Optional[int] = ..., epoch: _Optional[str] = ...) -> None: ...

class GatewayOp(_message.Message):
    __slots__ = ("deliver", "joined", "left", "close", "welcome", "resumed", "admin", "sync")
    DELIVER_FIELD_NUMBER: _ClassVar[int]
    JOINED_FIELD_NUMBER: _ClassVar[int]
    LEFT_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    deliver: Deliver
    joined: Membership
    left: Membership
    close: CloseClient
    welcome: Welcome
    resumed: ResumeResult
    admin: AdminAnswer
    sync: GatewaySync
    def __init__(self, deliver: _Optional[_Union[Deliver, _Mapping]] = ..., joined: _Optional[_Union[Membership, _Mapping]] = ..., left: _Optional[_Union[Membership, _Mapping]] = ..., close: _Optional[_Union[CloseClient, _Mapping]] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., resumed: _Optional[_Union[ResumeResult, _Mapping]] = ..., admin: _Optional[_Union[AdminAnswer, _Mapping]] = ..., sync: _Optional[_Union[GatewaySync, _Mapping]] = ...) -> None: ...

class GatewaySync(_message.Message):
    __slots__ = ("clients", "close")
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    clients: _containers.RepeatedCompositeFieldContainer[ClientRooms]
    close: _containers.RepeatedCompositeFieldContainer[CloseClient]
    def __init__(self, clients: _Optional[_Iterable[_Union[ClientRooms, _Mapping]]] = ..., close: _Optional[_Iterable[_Union[CloseClient, _Mapping]]] = ...) -> None: ...

class AdminAnswer(_message.Message):
    __slots__ = ("id", "json")
    ID_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    id: int
    json: bytes
    def __init__(self, id: _Optional[int] = ..., json: _Optional[bytes] = ...) -> None: ...

class ResumeResult(_message.Message):
    __slots__ = ("link", "client", "reason", "rooms", "replay", "epoch")
    LINK_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ROOMS_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    link: str
    client: str
    reason: str
    rooms: _containers.RepeatedScalarFieldContainer[str]
    replay: _containers.RepeatedScalarFieldContainer[bytes]
    epoch: str
    def __init__(self, link: _Optional[str] = ..., client: _Optional[str] = ..., reason: _Optional[str] = ..., rooms: _Optional[_Iterable[str]] = ..., replay: _Optional[_Iterable[bytes]] = ..., epoch: _Optional[str] = ...) -> None: ...

class Deliver(_message.Message):
    __slots__ = ("frame", "clients", "room", "exclude")
    FRAME_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    ROOM_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    frame: bytes
    clients: _containers.RepeatedScalarFieldContainer[str]
    room: str
    exclude: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, frame: _Optional[bytes] = ..., clients: _Optional[_Iterable[str]] = ..., room: _Optional[str] = ..., exclude: _Optional[_Iterable[str]] = ...) -> None: ...

class Membership(_message.Message):
    __slots__ = ("client", "room", "request_id", "user")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    ROOM_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    client: str
    room: str
    request_id: bytes
    user: str
    def __init__(self, client: _Optional[str] = ..., room: _Optional[str] = ..., request_id: _Optional[bytes] = ..., user: _Optional[str] = ...) -> None: ...

class CloseClient(_message.Message):
    __slots__ = ("client", "code", "reason", "user")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    client: str
    code: int
    reason: str
    user: str
    def __init__(self, client: _Optional[str] = ..., code: _Optional[int] = ..., reason: _Optional[str] = ..., user: _Optional[str] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("epoch", "run", "logged")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    LOGGED_FIELD_NUMBER: _ClassVar[int]
    epoch: str
    run: str
    logged: bool
    def __init__(self, epoch: _Optional[str] = ..., run: _Optional[str] = ..., logged: _Optional[bool] = ...) -> None: ...

class ProcessorBeat(_message.Message):
    __slots__ = ("epoch", "acked", "run", "logged", "moving")
    class AckedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ACKED_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    LOGGED_FIELD_NUMBER: _ClassVar[int]
    MOVING_FIELD_NUMBER: _ClassVar[int]
    epoch: str
    acked: _containers.ScalarMap[str, int]
    run: str
    logged: bool
    moving: bool
    def __init__(self, epoch: _Optional[str] = ..., acked: _Optional[_Mapping[str, int]] = ..., run: _Optional[str] = ..., logged: _Optional[bool] = ..., moving: _Optional[bool] = ...) -> None: ...

class PairBeat(_message.Message):
    __slots__ = ("state", "term", "backup", "epoch", "log_behind", "handover")
    STATE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    BACKUP_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOG_BEHIND_FIELD_NUMBER: _ClassVar[int]
    HANDOVER_FIELD_NUMBER: _ClassVar[int]
    state: str
    term: int
    backup: bool
    epoch: str
    log_behind: int
    handover: bool
    def __init__(self, state: _Optional[str] = ..., term: _Optional[int] = ..., backup: _Optional[bool] = ..., epoch: _Optional[str] = ..., log_behind: _Optional[int] = ..., handover: _Optional[bool] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("kind", "client", "room", "seq", "user")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNSPECIFIED: _ClassVar[Event.Kind]
        CLIENT_CONNECTED: _ClassVar[Event.Kind]
        CLIENT_DISCONNECTED: _ClassVar[Event.Kind]
        ROOM_CREATED: _ClassVar[Event.Kind]
        ROOM_DELETED: _ClassVar[Event.Kind]
        CLIENT_JOINED_ROOM: _ClassVar[Event.Kind]
        CLIENT_LEFT_ROOM: _ClassVar[Event.Kind]
        CLIENT_AWAY: _ClassVar[Event.Kind]
        CLIENT_BACK: _ClassVar[Event.Kind]
    UNSPECIFIED: Event.Kind
    CLIENT_CONNECTED: Event.Kind
    CLIENT_DISCONNECTED: Event.Kind
    ROOM_CREATED: Event.Kind
    ROOM_DELETED: Event.Kind
    CLIENT_JOINED_ROOM: Event.Kind
    CLIENT_LEFT_ROOM: Event.Kind
    CLIENT_AWAY: Event.Kind
    CLIENT_BACK: Event.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    ROOM_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    kind: Event.Kind
    client: str
    room: str
    seq: int
    user: str
    def __init__(self, kind: _Optional[_Union[Event.Kind, str]] = ..., client: _Optional[str] = ..., room: _Optional[str] = ..., seq: _Optional[int] = ..., user: _Optional[str] = ...) -> None: ...

class WatcherIn(_message.Message):
    __slots__ = ("hello", "heartbeat", "command", "goodbye")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    GOODBYE_FIELD_NUMBER: _ClassVar[int]
    hello: WatcherHello
    heartbeat: Heartbeat
    command: Command
    goodbye: Heartbeat
    def __init__(self, hello: _Optional[_Union[WatcherHello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., command: _Optional[_Union[Command, _Mapping]] = ..., goodbye: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class WatcherHello(_message.Message):
    __slots__ = ("name", "rooms", "prefixes", "assigned")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROOMS_FIELD_NUMBER: _ClassVar[int]
    PREFIXES_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_FIELD_NUMBER: _ClassVar[int]
    name: str
    rooms: _containers.RepeatedScalarFieldContainer[str]
    prefixes: _containers.RepeatedScalarFieldContainer[str]
    assigned: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., rooms: _Optional[_Iterable[str]] = ..., prefixes: _Optional[_Iterable[str]] = ..., assigned: _Optional[_Iterable[str]] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("id", "create_room", "delete_room", "join", "remove", "send_room", "send_clients", "disconnect", "query", "settings", "idempotency_key")
    ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_ROOM_FIELD_NUMBER: _ClassVar[int]
    DELETE_ROOM_FIELD_NUMBER: _ClassVar[int]
    JOIN_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    SEND_ROOM_FIELD_NUMBER: _ClassVar[int]
    SEND_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    DISCONNECT_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    id: int
    create_room: CreateRoom
    delete_room: RoomRef
    join: Membership
    remove: Membership
    send_room: SendToRoom
    send_clients: SendToClients
    disconnect: CloseClient
    query: Query
    settings: RoomSettings
    idempotency_key: str
    def __init__(self, id: _Optional[int] = ..., create_room: _Optional[_Union[CreateRoom, _Mapping]] = ..., delete_room: _Optional[_Union[RoomRef, _Mapping]] = ..., join: _Optional[_Union[Membership, _Mapping]] = ..., remove: _Optional[_Union[Membership, _Mapping]] = ..., send_room: _Optional[_Union[SendToRoom, _Mapping]] = ..., send_clients: _Optional[_Union[SendToClients, _Mapping]] = ..., disconnect: _Optional[_Union[CloseClient, _Mapping]] = ..., query: _Optional[_Union[Query, _Mapping]] = ..., settings: _Optional[_Union[RoomSettings, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class RoomRef(_message.Message):
    __slots__ = ("room",)
    ROOM_FIELD_NUMBER: _ClassVar[int]
    room: str
    def __init__(self, room: _Optional[str] = ...) -> None: ...

class CreateRoom(_message.Message):
    __slots__ = ("room", "watcher", "settings")
    class SettingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ROOM_FIELD_NUMBER: _ClassVar[int]
    WATCHER_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    room: str
    watcher: str
    settings: _containers.ScalarMap[str, str]
    def __init__(self, room: _Optional[str] = ..., watcher: _Optional[str] = ..., settings: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SendToRoom(_message.Message):
    __slots__ = ("room", "message", "exclude")
    ROOM_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    room: str
    message: ClientMessage
    exclude: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, room: _Optional[str] = ..., message: _Optional[_Union[ClientMessage, _Mapping]] = ..., exclude: _Optional[_Iterable[str]] = ...) -> None: ...

class SendToClients(_message.Message):
    __slots__ = ("clients", "message", "user")
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    clients: _containers.RepeatedScalarFieldContainer[str]
    message: ClientMessage
    user: str
    def __init__(self, clients: _Optional[_Iterable[str]] = ..., message: _Optional[_Union[ClientMessage, _Mapping]] = ..., user: _Optional[str] = ...) -> None: ...

class Query(_message.Message):
    __slots__ = ("what", "room", "client", "limit", "after", "since")
    class What(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ROOMS: _ClassVar[Query.What]
        ROOM: _ClassVar[Query.What]
        CLIENT_ROOMS: _ClassVar[Query.What]
        ROOM_PAGE: _ClassVar[Query.What]
        HISTORY: _ClassVar[Query.What]
    ROOMS: Query.What
    ROOM: Query.What
    CLIENT_ROOMS: Query.What
    ROOM_PAGE: Query.What
    HISTORY: Query.What
    WHAT_FIELD_NUMBER: _ClassVar[int]
    ROOM_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    what: Query.What
    room: str
    client: str
    limit: int
    after: str
    since: int
    def __init__(self, what: _Optional[_Union[Query.What, str]] = ..., room: _Optional[str] = ..., client: _Optional[str] = ..., limit: _Optional[int] = ..., after: _Optional[str] = ..., since: _Optional[int] = ...) -> None: ...

class RoomSettings(_message.Message):
    __slots__ = ("room", "settings")
    class SettingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ROOM_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    room: str
    settings: _containers.ScalarMap[str, str]
    def __init__(self, room: _Optional[str] = ..., settings: _Optional[_Mapping[str, str]] = ...) -> None: ...

class WatcherOut(_message.Message):
    __slots__ = ("welcome", "event", "message", "reply")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    welcome: Snapshot
    event: Event
    message: ClientFrame
    reply: Reply
    def __init__(self, welcome: _Optional[_Union[Snapshot, _Mapping]] = ..., event: _Optional[_Union[Event, _Mapping]] = ..., message: _Optional[_Union[ClientFrame, _Mapping]] = ..., reply: _Optional[_Union[Reply, _Mapping]] = ...) -> None: ...

class RoomState(_message.Message):
    __slots__ = ("name", "members", "maker", "settings", "users", "count", "epoch", "offset")
    class SettingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    MAKER_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    name: str
    members: _containers.RepeatedScalarFieldContainer[str]
    maker: str
    settings: _containers.ScalarMap[str, str]
    users: _containers.RepeatedScalarFieldContainer[str]
    count: int
    epoch: str
    offset: int
    def __init__(self, name: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ..., maker: _Optional[str] = ..., settings: _Optional[_Mapping[str, str]] = ..., users: _Optional[_Iterable[str]] = ..., count: _Optional[int] = ..., epoch: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("epoch", "rooms")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ROOMS_FIELD_NUMBER: _ClassVar[int]
    epoch: str
    rooms: _containers.RepeatedCompositeFieldContainer[RoomState]
    def __init__(self, epoch: _Optional[str] = ..., rooms: _Optional[_Iterable[_Union[RoomState, _Mapping]]] = ...) -> None: ...

class Reply(_message.Message):
    __slots__ = ("id", "error", "message", "rooms", "position", "clients", "messages", "next", "since")
    ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ROOMS_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    id: int
    error: str
    message: str
    rooms: _containers.RepeatedCompositeFieldContainer[RoomState]
    position: Position
    clients: _containers.RepeatedScalarFieldContainer[str]
    messages: _containers.RepeatedScalarFieldContainer[bytes]
    next: str
    since: int
    def __init__(self, id: _Optional[int] = ..., error: _Optional[str] = ..., message: _Optional[str] = ..., rooms: _Optional[_Iterable[_Union[RoomState, _Mapping]]] = ..., position: _Optional[_Union[Position, _Mapping]] = ..., clients: _Optional[_Iterable[str]] = ..., messages: _Optional[_Iterable[bytes]] = ..., next: _Optional[str] = ..., since: _Optional[int] = ...) -> None: ...

class LogEntry(_message.Message):
    __slots__ = ("time", "inputs", "start")
    TIME_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    time: float
    inputs: _containers.RepeatedCompositeFieldContainer[LogInput]
    start: str
    def __init__(self, time: _Optional[float] = ..., inputs: _Optional[_Iterable[_Union[LogInput, _Mapping]]] = ..., start: _Optional[str] = ...) -> None: ...

class LogInput(_message.Message):
    __slots__ = ("gateway", "watcher", "subscription", "watcher_gone", "beat", "recovered")
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    WATCHER_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    WATCHER_GONE_FIELD_NUMBER: _ClassVar[int]
    BEAT_FIELD_NUMBER: _ClassVar[int]
    RECOVERED_FIELD_NUMBER: _ClassVar[int]
    gateway: bytes
    watcher: LoggedWatcherIn
    subscription: bytes
    watcher_gone: str
    beat: bool
    recovered: bool
    def __init__(self, gateway: _Optional[bytes] = ..., watcher: _Optional[_Union[LoggedWatcherIn, _Mapping]] = ..., subscription: _Optional[bytes] = ..., watcher_gone: _Optional[str] = ..., beat: _Optional[bool] = ..., recovered: _Optional[bool] = ...) -> None: ...

class LoggedWatcherIn(_message.Message):
    __slots__ = ("identity", "payload", "user", "has_user")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    HAS_USER_FIELD_NUMBER: _ClassVar[int]
    identity: bytes
    payload: bytes
    user: str
    has_user: bool
    def __init__(self, identity: _Optional[bytes] = ..., payload: _Optional[bytes] = ..., user: _Optional[str] = ..., has_user: _Optional[bool] = ...) -> None: ...

class ProcessorSnapshot(_message.Message):
    __slots__ = ("version", "crc32", "state")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    version: int
    crc32: int
    state: bytes
    def __init__(self, version: _Optional[int] = ..., crc32: _Optional[int] = ..., state: _Optional[bytes] = ...) -> None: ...

class ProcessorState(_message.Message):
    __slots__ = ("log_seq", "epoch", "mesh", "output", "processor")
    class Mesh(_message.Message):
        __slots__ = ("event_seq", "now", "rooms", "sessions", "history", "claims", "idempotent")
        EVENT_SEQ_FIELD_NUMBER: _ClassVar[int]
        NOW_FIELD_NUMBER: _ClassVar[int]
        ROOMS_FIELD_NUMBER: _ClassVar[int]
        SESSIONS_FIELD_NUMBER: _ClassVar[int]
        HISTORY_FIELD_NUMBER: _ClassVar[int]
        CLAIMS_FIELD_NUMBER: _ClassVar[int]
        IDEMPOTENT_FIELD_NUMBER: _ClassVar[int]
        event_seq: int
        now: float
        rooms: ProcessorState.Rooms
        sessions: ProcessorState.Sessions
        history: ProcessorState.History
        claims: ProcessorState.Claims
        idempotent: _containers.RepeatedCompositeFieldContainer[ProcessorState.Idempotent]
        def __init__(self, event_seq: _Optional[int] = ..., now: _Optional[float] = ..., rooms: _Optional[_Union[ProcessorState.Rooms, _Mapping]] = ..., sessions: _Optional[_Union[ProcessorState.Sessions, _Mapping]] = ..., history: _Optional[_Union[ProcessorState.History, _Mapping]] = ..., claims: _Optional[_Union[ProcessorState.Claims, _Mapping]] = ..., idempotent: _Optional[_Iterable[_Union[ProcessorState.Idempotent, _Mapping]]] = ...) -> None: ...
    class Rooms(_message.Message):
        __slots__ = ("incarnations", "rooms")
        INCARNATIONS_FIELD_NUMBER: _ClassVar[int]
        ROOMS_FIELD_NUMBER: _ClassVar[int]
        incarnations: int
        rooms: _containers.RepeatedCompositeFieldContainer[ProcessorState.Room]
        def __init__(self, incarnations: _Optional[int] = ..., rooms: _Optional[_Iterable[_Union[ProcessorState.Room, _Mapping]]] = ...) -> None: ...
    class Room(_message.Message):
        __slots__ = ("name", "members", "marks", "gateways", "counts", "maker", "setting_keys", "setting_values", "keep", "epoch")
        NAME_FIELD_NUMBER: _ClassVar[int]
        MEMBERS_FIELD_NUMBER: _ClassVar[int]
        MARKS_FIELD_NUMBER: _ClassVar[int]
        GATEWAYS_FIELD_NUMBER: _ClassVar[int]
        COUNTS_FIELD_NUMBER: _ClassVar[int]
        MAKER_FIELD_NUMBER: _ClassVar[int]
        SETTING_KEYS_FIELD_NUMBER: _ClassVar[int]
        SETTING_VALUES_FIELD_NUMBER: _ClassVar[int]
        KEEP_FIELD_NUMBER: _ClassVar[int]
        EPOCH_FIELD_NUMBER: _ClassVar[int]
        name: str
        members: _containers.RepeatedScalarFieldContainer[str]
        marks: _containers.RepeatedScalarFieldContainer[int]
        gateways: _containers.RepeatedScalarFieldContainer[str]
        counts: _containers.RepeatedScalarFieldContainer[int]
        maker: str
        setting_keys: _containers.RepeatedScalarFieldContainer[str]
        setting_values: _containers.RepeatedScalarFieldContainer[str]
        keep: bool
        epoch: str
        def __init__(self, name: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ..., marks: _Optional[_Iterable[int]] = ..., gateways: _Optional[_Iterable[str]] = ..., counts: _Optional[_Iterable[int]] = ..., maker: _Optional[str] = ..., setting_keys: _Optional[_Iterable[str]] = ..., setting_values: _Optional[_Iterable[str]] = ..., keep: _Optional[bool] = ..., epoch: _Optional[str] = ...) -> None: ...
    class Sessions(_message.Message):
        __slots__ = ("clients", "gateways", "sessions", "away", "away_until", "expired")
        CLIENTS_FIELD_NUMBER: _ClassVar[int]
        GATEWAYS_FIELD_NUMBER: _ClassVar[int]
        SESSIONS_FIELD_NUMBER: _ClassVar[int]
        AWAY_FIELD_NUMBER: _ClassVar[int]
        AWAY_UNTIL_FIELD_NUMBER: _ClassVar[int]
        EXPIRED_FIELD_NUMBER: _ClassVar[int]
        clients: _containers.RepeatedCompositeFieldContainer[ProcessorState.Client]
        gateways: _containers.RepeatedCompositeFieldContainer[ProcessorState.Gateway]
        sessions: _containers.RepeatedScalarFieldContainer[str]
        away: _containers.RepeatedScalarFieldContainer[str]
        away_until: _containers.RepeatedScalarFieldContainer[float]
        expired: _containers.RepeatedScalarFieldContainer[bytes]
        def __init__(self, clients: _Optional[_Iterable[_Union[ProcessorState.Client, _Mapping]]] = ..., gateways: _Optional[_Iterable[_Union[ProcessorState.Gateway, _Mapping]]] = ..., sessions: _Optional[_Iterable[str]] = ..., away: _Optional[_Iterable[str]] = ..., away_until: _Optional[_Iterable[float]] = ..., expired: _Optional[_Iterable[bytes]] = ...) -> None: ...
    class Client(_message.Message):
        __slots__ = ("id", "gateway", "rooms", "user", "session", "away_seq")
        ID_FIELD_NUMBER: _ClassVar[int]
        GATEWAY_FIELD_NUMBER: _ClassVar[int]
        ROOMS_FIELD_NUMBER: _ClassVar[int]
        USER_FIELD_NUMBER: _ClassVar[int]
        SESSION_FIELD_NUMBER: _ClassVar[int]
        AWAY_SEQ_FIELD_NUMBER: _ClassVar[int]
        id: str
        gateway: str
        rooms: _containers.RepeatedScalarFieldContainer[str]
        user: str
        session: bytes
        away_seq: int
        def __init__(self, id: _Optional[str] = ..., gateway: _Optional[str] = ..., rooms: _Optional[_Iterable[str]] = ..., user: _Optional[str] = ..., session: _Optional[bytes] = ..., away_seq: _Optional[int] = ...) -> None: ...
    class Gateway(_message.Message):
        __slots__ = ("id", "index", "last_seen", "closing", "closing_codes", "closing_reasons")
        ID_FIELD_NUMBER: _ClassVar[int]
        INDEX_FIELD_NUMBER: _ClassVar[int]
        LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
        CLOSING_FIELD_NUMBER: _ClassVar[int]
        CLOSING_CODES_FIELD_NUMBER: _ClassVar[int]
        CLOSING_REASONS_FIELD_NUMBER: _ClassVar[int]
        id: str
        index: int
        last_seen: float
        closing: _containers.RepeatedScalarFieldContainer[str]
        closing_codes: _containers.RepeatedScalarFieldContainer[int]
        closing_reasons: _containers.RepeatedScalarFieldContainer[str]
        def __init__(self, id: _Optional[str] = ..., index: _Optional[int] = ..., last_seen: _Optional[float] = ..., closing: _Optional[_Iterable[str]] = ..., closing_codes: _Optional[_Iterable[int]] = ..., closing_reasons: _Optional[_Iterable[str]] = ...) -> None: ...
    class History(_message.Message):
        __slots__ = ("seq", "rooms", "direct", "drop_reasons", "drop_counts")
        SEQ_FIELD_NUMBER: _ClassVar[int]
        ROOMS_FIELD_NUMBER: _ClassVar[int]
        DIRECT_FIELD_NUMBER: _ClassVar[int]
        DROP_REASONS_FIELD_NUMBER: _ClassVar[int]
        DROP_COUNTS_FIELD_NUMBER: _ClassVar[int]
        seq: int
        rooms: ProcessorState.Pool
        direct: ProcessorState.Pool
        drop_reasons: _containers.RepeatedScalarFieldContainer[str]
        drop_counts: _containers.RepeatedScalarFieldContainer[int]
        def __init__(self, seq: _Optional[int] = ..., rooms: _Optional[_Union[ProcessorState.Pool, _Mapping]] = ..., direct: _Optional[_Union[ProcessorState.Pool, _Mapping]] = ..., drop_reasons: _Optional[_Iterable[str]] = ..., drop_counts: _Optional[_Iterable[int]] = ...) -> None: ...
    class Pool(_message.Message):
        __slots__ = ("streams", "holding")
        STREAMS_FIELD_NUMBER: _ClassVar[int]
        HOLDING_FIELD_NUMBER: _ClassVar[int]
        streams: _containers.RepeatedCompositeFieldContainer[ProcessorState.Stream]
        holding: _containers.RepeatedScalarFieldContainer[str]
        def __init__(self, streams: _Optional[_Iterable[_Union[ProcessorState.Stream, _Mapping]]] = ..., holding: _Optional[_Iterable[str]] = ...) -> None: ...
    class Stream(_message.Message):
        __slots__ = ("key", "offset", "dropped", "seqs", "frames", "times", "excluding", "excluded_counts", "excluded")
        KEY_FIELD_NUMBER: _ClassVar[int]
        OFFSET_FIELD_NUMBER: _ClassVar[int]
        DROPPED_FIELD_NUMBER: _ClassVar[int]
        SEQS_FIELD_NUMBER: _ClassVar[int]
        FRAMES_FIELD_NUMBER: _ClassVar[int]
        TIMES_FIELD_NUMBER: _ClassVar[int]
        EXCLUDING_FIELD_NUMBER: _ClassVar[int]
        EXCLUDED_COUNTS_FIELD_NUMBER: _ClassVar[int]
        EXCLUDED_FIELD_NUMBER: _ClassVar[int]
        key: str
        offset: int
        dropped: int
        seqs: _containers.RepeatedScalarFieldContainer[int]
        frames: _containers.RepeatedScalarFieldContainer[bytes]
        times: _containers.RepeatedScalarFieldContainer[float]
        excluding: _containers.RepeatedScalarFieldContainer[int]
        excluded_counts: _containers.RepeatedScalarFieldContainer[int]
        excluded: _containers.RepeatedScalarFieldContainer[str]
        def __init__(self, key: _Optional[str] = ..., offset: _Optional[int] = ..., dropped: _Optional[int] = ..., seqs: _Optional[_Iterable[int]] = ..., frames: _Optional[_Iterable[bytes]] = ..., times: _Optional[_Iterable[float]] = ..., excluding: _Optional[_Iterable[int]] = ..., excluded_counts: _Optional[_Iterable[int]] = ..., excluded: _Optional[_Iterable[str]] = ...) -> None: ...
    class Claims(_message.Message):
        __slots__ = ("watchers", "owner_rooms", "owners")
        WATCHERS_FIELD_NUMBER: _ClassVar[int]
        OWNER_ROOMS_FIELD_NUMBER: _ClassVar[int]
        OWNERS_FIELD_NUMBER: _ClassVar[int]
        watchers: _containers.RepeatedCompositeFieldContainer[ProcessorState.Watcher]
        owner_rooms: _containers.RepeatedScalarFieldContainer[str]
        owners: _containers.RepeatedScalarFieldContainer[int]
        def __init__(self, watchers: _Optional[_Iterable[_Union[ProcessorState.Watcher, _Mapping]]] = ..., owner_rooms: _Optional[_Iterable[str]] = ..., owners: _Optional[_Iterable[int]] = ...) -> None: ...
    class Watcher(_message.Message):
        __slots__ = ("id", "name", "rooms", "prefixes", "last_seen", "alive", "assigned", "sent", "unacked_seqs", "unacked_clients", "unacked_actions", "unacked_targets", "unacked_request_ids")
        ID_FIELD_NUMBER: _ClassVar[int]
        NAME_FIELD_NUMBER: _ClassVar[int]
        ROOMS_FIELD_NUMBER: _ClassVar[int]
        PREFIXES_FIELD_NUMBER: _ClassVar[int]
        LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
        ALIVE_FIELD_NUMBER: _ClassVar[int]
        ASSIGNED_FIELD_NUMBER: _ClassVar[int]
        SENT_FIELD_NUMBER: _ClassVar[int]
        UNACKED_SEQS_FIELD_NUMBER: _ClassVar[int]
        UNACKED_CLIENTS_FIELD_NUMBER: _ClassVar[int]
        UNACKED_ACTIONS_FIELD_NUMBER: _ClassVar[int]
        UNACKED_TARGETS_FIELD_NUMBER: _ClassVar[int]
        UNACKED_REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
        id: str
        name: str
        rooms: _containers.RepeatedScalarFieldContainer[str]
        prefixes: _containers.RepeatedScalarFieldContainer[str]
        last_seen: float
        alive: bool
        assigned: _containers.RepeatedScalarFieldContainer[str]
        sent: int
        unacked_seqs: _containers.RepeatedScalarFieldContainer[int]
        unacked_clients: _containers.RepeatedScalarFieldContainer[str]
        unacked_actions: _containers.RepeatedScalarFieldContainer[str]
        unacked_targets: _containers.RepeatedScalarFieldContainer[str]
        unacked_request_ids: _containers.RepeatedScalarFieldContainer[bytes]
        def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., rooms: _Optional[_Iterable[str]] = ..., prefixes: _Optional[_Iterable[str]] = ..., last_seen: _Optional[float] = ..., alive: _Optional[bool] = ..., assigned: _Optional[_Iterable[str]] = ..., sent: _Optional[int] = ..., unacked_seqs: _Optional[_Iterable[int]] = ..., unacked_clients: _Optional[_Iterable[str]] = ..., unacked_actions: _Optional[_Iterable[str]] = ..., unacked_targets: _Optional[_Iterable[str]] = ..., unacked_request_ids: _Optional[_Iterable[bytes]] = ...) -> None: ...
    class Idempotent(_message.Message):
        __slots__ = ("key", "when", "answer")
        KEY_FIELD_NUMBER: _ClassVar[int]
        WHEN_FIELD_NUMBER: _ClassVar[int]
        ANSWER_FIELD_NUMBER: _ClassVar[int]
        key: str
        when: float
        answer: ProcessorState.Answer
        def __init__(self, key: _Optional[str] = ..., when: _Optional[float] = ..., answer: _Optional[_Union[ProcessorState.Answer, _Mapping]] = ...) -> None: ...
    class Answer(_message.Message):
        __slots__ = ("rooms", "offset", "epoch", "clients", "messages", "since", "next")
        ROOMS_FIELD_NUMBER: _ClassVar[int]
        OFFSET_FIELD_NUMBER: _ClassVar[int]
        EPOCH_FIELD_NUMBER: _ClassVar[int]
        CLIENTS_FIELD_NUMBER: _ClassVar[int]
        MESSAGES_FIELD_NUMBER: _ClassVar[int]
        SINCE_FIELD_NUMBER: _ClassVar[int]
        NEXT_FIELD_NUMBER: _ClassVar[int]
        rooms: _containers.RepeatedCompositeFieldContainer[ProcessorState.RoomView]
        offset: int
        epoch: str
        clients: _containers.RepeatedScalarFieldContainer[str]
        messages: _containers.RepeatedScalarFieldContainer[bytes]
        since: int
        next: str
        def __init__(self, rooms: _Optional[_Iterable[_Union[ProcessorState.RoomView, _Mapping]]] = ..., offset: _Optional[int] = ..., epoch: _Optional[str] = ..., clients: _Optional[_Iterable[str]] = ..., messages: _Optional[_Iterable[bytes]] = ..., since: _Optional[int] = ..., next: _Optional[str] = ...) -> None: ...
    class RoomView(_message.Message):
        __slots__ = ("name", "members", "maker", "setting_keys", "setting_values", "users", "count", "epoch", "offset")
        NAME_FIELD_NUMBER: _ClassVar[int]
        MEMBERS_FIELD_NUMBER: _ClassVar[int]
        MAKER_FIELD_NUMBER: _ClassVar[int]
        SETTING_KEYS_FIELD_NUMBER: _ClassVar[int]
        SETTING_VALUES_FIELD_NUMBER: _ClassVar[int]
        USERS_FIELD_NUMBER: _ClassVar[int]
        COUNT_FIELD_NUMBER: _ClassVar[int]
        EPOCH_FIELD_NUMBER: _ClassVar[int]
        OFFSET_FIELD_NUMBER: _ClassVar[int]
        name: str
        members: _containers.RepeatedScalarFieldContainer[str]
        maker: str
        setting_keys: _containers.RepeatedScalarFieldContainer[str]
        setting_values: _containers.RepeatedScalarFieldContainer[str]
        users: _containers.RepeatedScalarFieldContainer[str]
        count: int
        epoch: str
        offset: int
        def __init__(self, name: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ..., maker: _Optional[str] = ..., setting_keys: _Optional[_Iterable[str]] = ..., setting_values: _Optional[_Iterable[str]] = ..., users: _Optional[_Iterable[str]] = ..., count: _Optional[int] = ..., epoch: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...
    class Output(_message.Message):
        __slots__ = ("streams", "touched", "broadcasts", "over", "holding")
        STREAMS_FIELD_NUMBER: _ClassVar[int]
        TOUCHED_FIELD_NUMBER: _ClassVar[int]
        BROADCASTS_FIELD_NUMBER: _ClassVar[int]
        OVER_FIELD_NUMBER: _ClassVar[int]
        HOLDING_FIELD_NUMBER: _ClassVar[int]
        streams: _containers.RepeatedCompositeFieldContainer[ProcessorState.GatewayStream]
        touched: _containers.RepeatedScalarFieldContainer[str]
        broadcasts: int
        over: _containers.RepeatedScalarFieldContainer[str]
        holding: _containers.RepeatedScalarFieldContainer[str]
        def __init__(self, streams: _Optional[_Iterable[_Union[ProcessorState.GatewayStream, _Mapping]]] = ..., touched: _Optional[_Iterable[str]] = ..., broadcasts: _Optional[int] = ..., over: _Optional[_Iterable[str]] = ..., holding: _Optional[_Iterable[str]] = ...) -> None: ...
    class GatewayStream(_message.Message):
        __slots__ = ("gateway", "seq", "ops", "unapplied", "sent", "retained")
        GATEWAY_FIELD_NUMBER: _ClassVar[int]
        SEQ_FIELD_NUMBER: _ClassVar[int]
        OPS_FIELD_NUMBER: _ClassVar[int]
        UNAPPLIED_FIELD_NUMBER: _ClassVar[int]
        SENT_FIELD_NUMBER: _ClassVar[int]
        RETAINED_FIELD_NUMBER: _ClassVar[int]
        gateway: str
        seq: int
        ops: _containers.RepeatedScalarFieldContainer[bytes]
        unapplied: _containers.RepeatedScalarFieldContainer[int]
        sent: _containers.RepeatedScalarFieldContainer[float]
        retained: _containers.RepeatedScalarFieldContainer[bytes]
        def __init__(self, gateway: _Optional[str] = ..., seq: _Optional[int] = ..., ops: _Optional[_Iterable[bytes]] = ..., unapplied: _Optional[_Iterable[int]] = ..., sent: _Optional[_Iterable[float]] = ..., retained: _Optional[_Iterable[bytes]] = ...) -> None: ...
    class Processor(_message.Message):
        __slots__ = ("last_time", "acked", "acked_seqs", "peers", "peer_states", "subscriptions", "recovering", "resend")
        LAST_TIME_FIELD_NUMBER: _ClassVar[int]
        ACKED_FIELD_NUMBER: _ClassVar[int]
        ACKED_SEQS_FIELD_NUMBER: _ClassVar[int]
        PEERS_FIELD_NUMBER: _ClassVar[int]
        PEER_STATES_FIELD_NUMBER: _ClassVar[int]
        SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
        RECOVERING_FIELD_NUMBER: _ClassVar[int]
        RESEND_FIELD_NUMBER: _ClassVar[int]
        last_time: float
        acked: _containers.RepeatedScalarFieldContainer[str]
        acked_seqs: _containers.RepeatedScalarFieldContainer[int]
        peers: _containers.RepeatedScalarFieldContainer[str]
        peer_states: _containers.RepeatedScalarFieldContainer[str]
        subscriptions: _containers.RepeatedScalarFieldContainer[bytes]
        recovering: _containers.RepeatedScalarFieldContainer[str]
        resend: _containers.RepeatedScalarFieldContainer[str]
        def __init__(self, last_time: _Optional[float] = ..., acked: _Optional[_Iterable[str]] = ..., acked_seqs: _Optional[_Iterable[int]] = ..., peers: _Optional[_Iterable[str]] = ..., peer_states: _Optional[_Iterable[str]] = ..., subscriptions: _Optional[_Iterable[bytes]] = ..., recovering: _Optional[_Iterable[str]] = ..., resend: _Optional[_Iterable[str]] = ...) -> None: ...
    LOG_SEQ_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MESH_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    log_seq: int
    epoch: str
    mesh: ProcessorState.Mesh
    output: ProcessorState.Output
    processor: ProcessorState.Processor
    def __init__(self, log_seq: _Optional[int] = ..., epoch: _Optional[str] = ..., mesh: _Optional[_Union[ProcessorState.Mesh, _Mapping]] = ..., output: _Optional[_Union[ProcessorState.Output, _Mapping]] = ..., processor: _Optional[_Union[ProcessorState.Processor, _Mapping]] = ...) -> None: ...
