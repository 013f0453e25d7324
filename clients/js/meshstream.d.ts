// Type declarations for meshstream.js (docs/clients.md is the guide, docs/protocol.md the wire).

/** One JSON frame of the client protocol (docs/protocol.md, "Frames"). */
export interface Frame {
  action: string;
  target?: string;
  message_body?: Record<string, any>;
  sender?: string;
  IsTargetClient?: boolean;
  id?: string | number;
  /** Position of a room message or direct message (docs/protocol.md, Positions). */
  offset?: number;
  epoch?: string;
  [field: string]: unknown;
}

/** A frame from the server: `message_body` is always an object. */
export interface ServerFrame extends Frame {
  message_body: Record<string, any>;
}

export type ErrorCode =
  | "bad-json" | "not-object" | "missing-action" | "bad-action" | "bad-target" | "bad-body" | "bad-id"
  | "binary-frame" | "rate-limited" | "missing-target" | "bad-room-name" | "unknown-room" | "not-member"
  | "already-member" | "unknown-client" | "forbidden" | "history-lost" | "too-many-rooms" | "bad-token"
  | "token-expired" | "token-required" | "lobby-readonly" | "cannot-leave-lobby" | "unknown-sender"
  | "processor-unavailable" | "processor-restarted" | "messages-lost" | "watcher-unavailable"
  | "watcher-restarted" | "unknown-action" | "watcher-error"
  // the library's own
  | "timeout" | "connection-lost" | "closed" | "no-websocket" | "bad-url" | "outbox-full"
  | "token-unavailable";

/** An error reply, a refused connection, or a request that timed out. */
export class MeshError extends Error {
  constructor(code: string, message?: string, detail?: { frame?: ServerFrame; closeCode?: number });
  /** A docs/protocol.md error code, a 4003 close reason, a watcher's own code, or the library's own. */
  readonly code: ErrorCode | (string & {});
  /** The error frame, when the server sent one. */
  readonly frame?: ServerFrame;
  /** The WebSocket close code, when the connection was closed. */
  readonly closeCode?: number;
}

export const LOBBY: "mesh-global";
/** Close codes after which the client reconnects (and resumes); any other ends it. */
export const RECONNECT_CODES: ReadonlySet<number>;

/** Split one WebSocket text message into frames ("\n"-joined); non-frames are skipped. */
export function parseFrame(text: unknown): ServerFrame[];
/** Reconnect delay in ms: `min` doubling per attempt up to `max`, ±50 % jitter. */
export function backoff(attempt: number, options?: { min?: number; max?: number; rand?: () => number }): number;
/** ms until a token expiring at `expires` (ms) is refreshed: a fifth of its life left, 1 s to `lead` ms ahead. */
export function refreshDelay(expires: number, now: number, lead?: number): number;
/** A JWT's `exp` (seconds since the epoch), or null. Not verified. */
export function tokenExpiry(token: string | undefined): number | null;

export type ConnectOutcome = "fresh" | "resumed" | "refused";

/** Resume bookkeeping: pure, fed frames and close codes. */
export class Resume {
  /** The resume secret ("" when there is none: never resume). */
  session: string;
  /** The processor's: also the epoch of this client's direct messages. */
  epoch: string;
  /** Per stream epoch, the offset of the last message received (least recently active first). */
  positions: Map<string, number>;
  client: string;
  shouldResume(code: number): boolean;
  url(base: string): string;
  /** False for a repeat (an `offset` not above the last of its epoch's). */
  accept(frame: Frame): boolean;
  connected(body: Record<string, any> | undefined): ConnectOutcome;
  reset(): void;
}

export interface ConnectedDetail {
  clientId: string;
  /** The token's `sub`; undefined when the server has no key (anonymous). */
  user?: string;
  outcome: ConnectOutcome;
  /** outcome "refused": why (unknown-session, expired, user-mismatch, history-lost). */
  reason?: string;
  /** outcome "refused": the client ID that was lost. */
  previousClientId?: string;
}

export interface DisconnectedDetail {
  code: number;
  reason: string;
  willReconnect: boolean;
  willResume: boolean;
}

export interface MeshClientEvents {
  message: ServerFrame;
  error: MeshError;
  connected: ConnectedDetail;
  resumed: { clientId: string };
  disconnected: DisconnectedDetail;
  reconnecting: { attempt: number; delay: number; resume: boolean };
  closed: { code: number; reason: string; error?: MeshError };
  "token-refreshed": { expires?: number };
}

/** A WebSocket class: the browser's, Node 22's global, or the `ws` package's. */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export interface MeshClientOptions {
  /** A JWT, sent as ?token= (browsers cannot set headers). */
  token?: string;
  /** Supplies a token: before each reconnect, and before the current one expires (refreshDelay). */
  getToken?: () => string | Promise<string>;
  /** At most this many ms before `exp` the token is refreshed (default 60000). */
  refreshLead?: number;
  /** request() timeout in ms (default 10000). */
  requestTimeout?: number;
  /** Reconnect after a lost connection (default true). */
  reconnect?: boolean;
  /** First reconnect delay in ms (default 500), doubling per attempt... */
  backoffMin?: number;
  /** ...up to this (default 10000); each ±50 % jitter. */
  backoffMax?: number;
  /**
   * Whether a frame sent while disconnected still goes once connected (`outcome` of that
   * connection). Default: unless the resume was refused (the rooms it names were left).
   */
  keepQueued?: (frame: Frame, outcome: ConnectOutcome) => boolean;
  /** The WebSocket class (default: globalThis.WebSocket). */
  WebSocket?: new (url: string) => WebSocketLike;
}

export type ClientState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export class MeshClient {
  constructor(url: string, options?: MeshClientOptions);
  readonly url: string;
  /** Resume bookkeeping (the session secret and the positions). */
  readonly resume: Resume;
  /** The client ID from the last client-connected ("" before). */
  readonly clientId: string;
  readonly user?: string;
  readonly state: ClientState;
  /** The current token. */
  readonly token?: string;

  on<K extends keyof MeshClientEvents>(type: K, fn: (detail: MeshClientEvents[K]) => void): () => void;
  off<K extends keyof MeshClientEvents>(type: K, fn: (detail: MeshClientEvents[K]) => void): void;
  once<K extends keyof MeshClientEvents>(type: K, filter?: (detail: MeshClientEvents[K]) => boolean):
    Promise<MeshClientEvents[K]>;

  /** Resolves with the first `connected`; rejects with a MeshError when the client gives up. */
  connect(): Promise<ConnectedDetail>;
  /** Close for good (a clean close: the session ends at once). */
  close(code?: number, reason?: string): void;
  /** Skip the backoff wait. */
  reconnectNow(): void;

  /** Send a frame (queued while connecting or resuming). */
  send(frame: Frame): void;
  /** Send with a fresh numeric `id`; the reply carrying it, or a MeshError. */
  request(frame: Frame, options?: { timeout?: number }): Promise<ServerFrame>;
  join(room: string, body?: Record<string, any>, options?: { timeout?: number }): Promise<ServerFrame>;
  leave(room: string, options?: { timeout?: number }): Promise<ServerFrame>;
  /** Relay to a room; resolves with your own copy (the acknowledgement). */
  publish(room: string, action: string, body?: Record<string, any>, options?: { timeout?: number }):
    Promise<ServerFrame>;
  /** A direct message (no reply on success). */
  sendTo(clientId: string, action: string, body?: Record<string, any>): void;
  /** `refresh-token` with `token`, or one from getToken. */
  refreshToken(token?: string): Promise<{ user: string; expires?: number }>;
}
