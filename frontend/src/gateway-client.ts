/**
 * Browser client for the realtime client gateway: one callback API over EventSource (default)
 * or WebSocket, with resume, backoff and the close-code catalogue of
 * `quart_gateway/live/disconnect.py` built in. No runtime dependencies.
 *
 *     import { GatewayClient } from "/static/gateway-client.js";
 *     const client = new GatewayClient({
 *       getToken: async () => (await fetch("/my-app/token")).text(),
 *       onConnected: () => hydrate(),       // GET /v1/batches/{id}/status
 *       onResync: () => hydrate(),          // events may have been missed
 *       onEvent: (event) => render(event),  // a domain event, typed by `event`
 *     });
 *     client.start();
 *
 * Every connection attempt trades the JWT (sent in an `Authorization` header) for a fresh
 * single-use stream ticket (`POST /v1/stream-tickets`); stream URLs hold only the ticket. The
 * client reconnects by itself and resumes after the last event id it saw, on both transports
 * (`?last_event_id=`). It never relies on EventSource's own reconnect: that one stops for good
 * on a 401 and would present the spent ticket again.
 *
 * The tabs of one browser share one stream: one tab (elected with the Web Locks API) holds it
 * and relays what it receives to the others over a BroadcastChannel; when it closes, another
 * tab takes over and resumes after the last event id it saw. `share: false` turns this off.
 *
 * See docs/frontend.md.
 */

import type { DomainEvent, EventOf, GatewayEvent } from "./generated/events.js";

export type { DomainEvent, EventOf, GatewayEvent } from "./generated/events.js";

export type Transport = "sse" | "ws";

/**
 * - `connecting`: a connection is being opened (first time, or after `retryInMs`).
 * - `open`: the gateway sent `connected`; events flow.
 * - `waiting`: disconnected; the next attempt starts after `retryInMs`.
 * - `auth_failed`: the gateway refused the token; no retry until `start()` is called again.
 * - `stopped`: `stop()` was called, or the gateway said not to reconnect.
 */
export type ConnectionState = "connecting" | "open" | "waiting" | "auth_failed" | "stopped";

export interface StatusChange {
  state: ConnectionState;
  transport: Transport;
  /** Failed attempts since the last healthy connection. */
  attempt: number;
  /** Delay before the next attempt, for `waiting`. */
  retryInMs?: number;
  /** Why the previous connection ended: a catalogue reason such as `server_restart`. */
  reason?: string;
  /** WebSocket close code or the code of the SSE `disconnect` event, when there was one. */
  code?: number;
}

export interface AuthFailure {
  /** `invalid_token`, `token_expired` (and the refresh failed) or `origin_not_allowed`. */
  reason: string;
  transport: Transport;
  /** HTTP status of the SSE probe (401), or the WebSocket close code (1008). */
  status?: number;
  code?: number;
}

export interface ConnectedInfo {
  message: EventOf<"connected">;
  /** True when this connection resumes after `lastEventId`: missed events are replayed. */
  resumed: boolean;
}

export interface BackoffOptions {
  /** First retry window in ms (full jitter: the delay is random in [0, window]). */
  initialMs?: number;
  /** Largest retry window in ms. */
  maxMs?: number;
}

export interface GatewayClientOptions {
  /** Gateway base URL, e.g. `https://gateway.example.com`. Default: the page's origin. */
  url?: string;
  /** `sse` (default) or `ws`. */
  transport?: Transport;
  /** Returns the current JWT; it only travels in `Authorization` headers, never in a URL. */
  getToken: () => string | Promise<string>;
  /** Returns a new JWT after `token_expired`. Default: `getToken` again. */
  refreshToken?: () => string | Promise<string>;
  /**
   * Returns a single-use stream ticket for the given JWT; called before every connection
   * attempt. Default: `POST /v1/stream-tickets` on the gateway with the JWT as Bearer token.
   */
  getTicket?: (token: string) => Promise<string>;
  /** Share one stream among this browser's tabs (Web Locks + BroadcastChannel). Default true. */
  share?: boolean;
  /** Who the stream belongs to, for the sharing lock. Default: the JWT's `sub`. */
  shareKey?: string;
  /** This tab's part in the shared stream changed: `leader` holds it, `follower` is fed. */
  onShare?: (role: ShareRole) => void;
  /** Every domain event (not `connected`, `ping`, `resync`, `disconnect`), once, in order. */
  onEvent?: (event: DomainEvent) => void;
  /** Every message, system messages included. */
  onMessage?: (message: GatewayEvent) => void;
  /** After each `connected`: hydrate here (at least when `resumed` is false). */
  onConnected?: (info: ConnectedInfo) => void;
  /** Events may have been missed (`resync`): re-hydrate through the status endpoint. */
  onResync?: (reason: string) => void;
  /** Connection state changes, for an indicator. */
  onStatus?: (status: StatusChange) => void;
  /** The token was refused: the client stops; call `start()` with a working `getToken`. */
  onAuthError?: (failure: AuthFailure) => void;
  /** Resume after this id (e.g. kept in sessionStorage across page loads). */
  lastEventId?: string;
  backoff?: BackoffOptions;
  /** Reconnect when nothing arrives for this many heartbeat intervals. Default 2.5. */
  livenessFactor?: number;
  /** Give up on an attempt that has not sent `connected` after this many ms. Default 15000. */
  connectTimeoutMs?: number;
  /** Upper bound of the random delay before reconnecting after `server_restart`. Default 2000. */
  restartJitterMs?: number;
}

/**
 * - `solo`: this tab holds its own stream (sharing is off or unsupported).
 * - `leader`: this tab holds the stream and relays it to the browser's other tabs.
 * - `follower`: another tab holds the stream; this one is fed over a BroadcastChannel.
 */
export type ShareRole = "solo" | "leader" | "follower";

/** How a connection ended, on either transport. */
interface Ending {
  code?: number;
  reason: string;
  /** The gateway's `reconnect` flag from a `disconnect` message, when there was one. */
  reconnect?: boolean;
  /** HTTP status learnt by probing /events after an EventSource failure. */
  status?: number;
  retryAfterMs?: number;
  /** The reconnect delay a `disconnect` message asked for (`retry_ms`). */
  retryMs?: number;
}

interface Active {
  close(): void;
}

const CONNECTION_HEALTHY_MS = 10_000;

/** Full jitter: a random delay in [0, min(max, initial * 2^attempt)]. */
export function backoffDelay(attempt: number, initialMs = 500, maxMs = 30_000): number {
  const window = Math.min(maxMs, initialMs * 2 ** Math.max(0, attempt));
  return Math.floor(Math.random() * window);
}

/** Compare Redis stream ids (`<ms>-<seq>`); null when either is not one. */
export function compareEventIds(a: string, b: string): number | null {
  const pa = /^(\d+)-(\d+)$/.exec(a);
  const pb = /^(\d+)-(\d+)$/.exec(b);
  if (!pa || !pb) return null;
  const ms = BigInt(pa[1]!) - BigInt(pb[1]!);
  if (ms !== 0n) return ms < 0n ? -1 : 1;
  const seq = BigInt(pa[2]!) - BigInt(pb[2]!);
  return seq === 0n ? 0 : seq < 0n ? -1 : 1;
}

const SYSTEM_EVENTS = new Set(["connected", "ping", "resync", "disconnect"]);

/** Statuses a leader relays to its followers: the state of the shared stream. */
const SHARED_STATES = new Set<ConnectionState>(["connecting", "open", "waiting"]);

/** How often a follower that has not heard from a leader yet says hello again. */
const HELLO_INTERVAL_MS = 1_000;

/** What tabs say to each other on the BroadcastChannel of a shared stream. */
type ShareMessage =
  | { type: "hello"; from: string }
  | { type: "leader"; from: string }
  | {
      type: "welcome";
      from: string;
      to: string;
      lastId: string | null;
      status: StatusChange | null;
      connected: EventOf<"connected"> | null;
    }
  | { type: "message"; from: string; message: GatewayEvent; resumed: boolean }
  | { type: "status"; from: string; status: StatusChange };

/** The JWT's `sub`, read without verification: only to name the shared stream. */
export function tokenSubject(token: string): string | undefined {
  const payload = token.split(".")[1];
  if (payload === undefined) return undefined;
  try {
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    const claims = JSON.parse(json) as { sub?: unknown };
    return typeof claims.sub === "string" ? claims.sub : undefined;
  } catch {
    return undefined;
  }
}

function sharingSupported(): boolean {
  return (
    typeof navigator !== "undefined" &&
    typeof navigator.locks?.request === "function" &&
    typeof BroadcastChannel !== "undefined"
  );
}

/** One tab's membership of a shared stream: the lock it holds or waits for, and the channel. */
interface Share {
  name: string;
  channel: BroadcastChannel;
  abort: AbortController;
  release: (() => void) | null;
  welcomed: boolean;
  hello: ReturnType<typeof setInterval> | undefined;
}

export class GatewayClient {
  private readonly options: GatewayClientOptions;
  private transportName: Transport;
  private lastId: string | undefined;
  private token: string | undefined;
  /** The token has been accepted before: a later refusal may mean it expired. */
  private tokenProven = false;
  private triedRefresh = false;
  private generation = 0;
  private active: Active | null = null;
  private attempt = 0;
  private connectedAt = 0;
  private connected = false;
  private running = false;
  private currentState: ConnectionState = "stopped";
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private livenessTimer: ReturnType<typeof setTimeout> | undefined;
  private livenessMs = 0;
  private shareRole: ShareRole = "solo";
  private share: Share | null = null;
  /** Bumped on every join and leave of a shared stream: stale lock grants give up. */
  private shareSession = 0;
  private lastStatus: StatusChange | null = null;
  private lastConnected: EventOf<"connected"> | null = null;
  private readonly tabId = Math.random().toString(36).slice(2) + Date.now().toString(36);
  private readonly onOnline = (): void => this.retryNow();
  private readonly onFreeze = (): void => this.pause();
  private readonly onResume = (): void => this.unpause();
  private readonly onPageHide = (event: PageTransitionEvent): void => {
    if (event.persisted) this.pause();
  };
  private readonly onPageShow = (event: PageTransitionEvent): void => {
    if (event.persisted) this.unpause();
  };
  private paused = false;

  constructor(options: GatewayClientOptions) {
    this.options = options;
    this.transportName = options.transport ?? "sse";
    this.lastId = options.lastEventId;
  }

  get state(): ConnectionState {
    return this.currentState;
  }

  get transport(): Transport {
    return this.transportName;
  }

  /** The id of the last event received (or the gateway's cursor); the client resumes after it. */
  get lastEventId(): string | undefined {
    return this.lastId;
  }

  /** This tab's part in the shared stream. */
  get role(): ShareRole {
    return this.shareRole;
  }

  /** How many tabs share this tab's stream (1 when it is not shared). */
  async sharedTabs(): Promise<number> {
    const share = this.share;
    if (share === null || !sharingSupported()) return 1;
    const snapshot = await navigator.locks.query();
    const mine = (locks: LockInfo[] | undefined): number =>
      (locks ?? []).filter((lock) => lock.name === share.name).length;
    return Math.max(1, mine(snapshot.held) + mine(snapshot.pending));
  }

  /** Connect (or reconnect now, after `auth_failed` or `stop()`). */
  start(): void {
    this.leaveShare();
    this.teardown();
    this.running = true;
    this.attempt = 0;
    this.triedRefresh = false;
    this.token = undefined;
    this.tokenProven = false;
    if (typeof window !== "undefined") {
      window.addEventListener("online", this.onOnline);
      window.addEventListener("pagehide", this.onPageHide);
      window.addEventListener("pageshow", this.onPageShow);
    }
    if (typeof document !== "undefined") {
      document.addEventListener("freeze", this.onFreeze);
      document.addEventListener("resume", this.onResume);
    }
    if (this.options.share !== false && sharingSupported()) {
      void this.joinShare();
    } else {
      this.setRole("solo");
      this.connect();
    }
  }

  /** Close the connection and stop reconnecting. */
  stop(): void {
    this.running = false;
    this.teardown();
    this.leaveShare();
    if (typeof window !== "undefined") {
      window.removeEventListener("online", this.onOnline);
      window.removeEventListener("pagehide", this.onPageHide);
      window.removeEventListener("pageshow", this.onPageShow);
    }
    if (typeof document !== "undefined") {
      document.removeEventListener("freeze", this.onFreeze);
      document.removeEventListener("resume", this.onResume);
    }
    this.setState({ state: "stopped", transport: this.transportName, attempt: this.attempt });
  }

  /** Switch transports; reconnects at once and resumes after the last event id. */
  setTransport(transport: Transport): void {
    if (transport === this.transportName) return;
    this.transportName = transport;
    if (this.running && this.shareRole !== "follower") {
      this.teardown();
      this.connect();
    }
  }

  // --- sharing one stream among tabs ---------------------------------------------------------

  /** Wait for the tab lock: the tab that gets it holds the stream, the others are fed. */
  private async joinShare(): Promise<void> {
    const session = ++this.shareSession;
    let token: string;
    try {
      token = await this.currentToken();
    } catch {
      if (session === this.shareSession) this.authFailed({ reason: "token_unavailable" });
      return;
    }
    if (session !== this.shareSession || !this.running) return;
    const base = new URL(this.baseUrl());
    const identity = this.options.shareKey ?? tokenSubject(token) ?? "";
    const name = `gateway-client:${base.origin}:${identity}`;
    const share: Share = {
      name,
      channel: new BroadcastChannel(name),
      abort: new AbortController(),
      release: null,
      welcomed: false,
      hello: undefined,
    };
    this.share = share;
    share.channel.onmessage = (event: MessageEvent<ShareMessage>) => {
      if (this.share === share) this.onShareMessage(share, event.data);
    };
    this.setRole("follower");
    this.setState({ state: "connecting", transport: this.transportName, attempt: this.attempt });
    this.post({ type: "hello", from: this.tabId });
    share.hello = setInterval(() => {
      if (!share.welcomed) this.post({ type: "hello", from: this.tabId });
    }, HELLO_INTERVAL_MS);
    navigator.locks
      .request(name, { signal: share.abort.signal }, () => {
        if (this.share !== share) return undefined; // left while waiting
        return new Promise<void>((release) => {
          share.release = release;
          this.lead(share);
        });
      })
      .catch(() => undefined); // aborted: this tab left before it got the lock
  }

  private lead(share: Share): void {
    clearInterval(share.hello);
    share.welcomed = true;
    this.setRole("leader");
    this.post({ type: "leader", from: this.tabId });
    this.connect(); // resumes after the last id this tab saw, as a follower or before
  }

  private leaveShare(): void {
    const share = this.share;
    this.shareSession += 1;
    if (share === null) return;
    this.share = null;
    clearInterval(share.hello);
    share.abort.abort();
    share.release?.(); // the next tab in line takes over
    share.channel.close();
    this.lastConnected = null;
    this.setRole("solo");
  }

  /** Frozen or put in the back/forward cache: hand the stream to another tab. */
  private pause(): void {
    if (!this.running || this.share === null) return;
    this.paused = true;
    this.teardown();
    this.leaveShare();
  }

  private unpause(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.running) void this.joinShare();
  }

  private post(message: ShareMessage): void {
    try {
      this.share?.channel.postMessage(message);
    } catch {
      // a closed channel: this tab is leaving
    }
  }

  private onShareMessage(share: Share, message: ShareMessage): void {
    if (this.shareRole === "leader") {
      if (message.type === "hello") {
        this.post({
          type: "welcome",
          from: this.tabId,
          to: message.from,
          lastId: this.lastId ?? null,
          status: this.lastStatus,
          connected: this.lastConnected,
        });
      }
      return;
    }
    switch (message.type) {
      case "leader":
        if (!share.welcomed) this.post({ type: "hello", from: this.tabId });
        break;
      case "welcome":
        if (message.to !== this.tabId || share.welcomed) break;
        share.welcomed = true;
        clearInterval(share.hello);
        if (message.lastId !== null) this.lastId = message.lastId;
        if (message.status !== null) this.followStatus(message.status);
        // A tab that joins has no state yet: it hydrates (`resumed` false).
        if (message.connected !== null) this.deliver(message.connected, false);
        break;
      case "status":
        if (share.welcomed) this.followStatus(message.status);
        break;
      case "message":
        if (share.welcomed) this.deliver(message.message, message.resumed);
        break;
      default:
        break;
    }
  }

  private followStatus(status: StatusChange): void {
    if (this.running) this.setState(status);
  }

  private setRole(role: ShareRole): void {
    if (role === this.shareRole) return;
    this.shareRole = role;
    this.options.onShare?.(role);
  }

  // --- connecting ----------------------------------------------------------------------------

  private baseUrl(): string {
    return this.options.url ?? window.location.origin;
  }

  private teardown(): void {
    this.generation += 1;
    clearTimeout(this.retryTimer);
    clearTimeout(this.livenessTimer);
    this.retryTimer = undefined;
    this.active?.close();
    this.active = null;
    this.connected = false;
    this.lastConnected = null;
  }

  private retryNow(): void {
    if (this.running && this.retryTimer !== undefined) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
      this.connect();
    }
  }

  private connect(): void {
    this.teardown();
    const generation = this.generation;
    this.setState({ state: "connecting", transport: this.transportName, attempt: this.attempt });
    void this.currentToken().then(
      async (token) => {
        if (generation !== this.generation || !this.running) return;
        const ticket = await this.streamTicket(token);
        if (generation !== this.generation || !this.running) return;
        if (typeof ticket !== "string") {
          this.ended(ticket, generation);
          return;
        }
        const url = this.streamUrl(ticket);
        this.active =
          this.transportName === "ws"
            ? this.openWebSocket(url, generation)
            : this.openEventSource(url, generation);
        this.armTimer(this.options.connectTimeoutMs ?? 15_000, generation, "connect_timeout");
      },
      () => {
        if (generation === this.generation) this.authFailed({ reason: "token_unavailable" });
      },
    );
  }

  private async currentToken(): Promise<string> {
    if (this.token === undefined) {
      this.token = await this.options.getToken();
      this.tokenProven = false;
    }
    return this.token;
  }

  /**
   * A single-use ticket for the next stream, or how getting one failed: 401 is a refused
   * token, 429 a rate limit (with Retry-After); anything else is transient.
   */
  private async streamTicket(token: string): Promise<string | Ending> {
    if (this.options.getTicket !== undefined) {
      try {
        return await this.options.getTicket(token);
      } catch {
        return { reason: "ticket_unavailable" };
      }
    }
    let response: Response;
    try {
      response = await fetch(new URL("/v1/stream-tickets", this.baseUrl()), {
        method: "POST",
        headers: { Authorization: `Bearer ${token}` },
        cache: "no-store",
      });
    } catch {
      return { reason: "unreachable" };
    }
    if (response.ok) {
      try {
        const body = (await response.json()) as { ticket?: unknown };
        if (typeof body.ticket === "string") {
          this.tokenProven = true;
          return body.ticket;
        }
      } catch {
        // not the answer of a gateway: transient
      }
      return { reason: "ticket_unavailable", status: response.status };
    }
    const ending: Ending = { reason: `http_${response.status}`, status: response.status };
    if (response.status === 401) ending.reason = "invalid_token";
    if (response.status === 429) ending.reason = "rate_limited";
    const retryAfter = Number(response.headers.get("Retry-After"));
    if (retryAfter > 0) ending.retryAfterMs = retryAfter * 1000;
    return ending;
  }

  private streamUrl(ticket: string): string {
    const url = new URL(this.transportName === "ws" ? "/ws" : "/events", this.baseUrl());
    if (this.transportName === "ws") url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("ticket", ticket);
    if (this.lastId !== undefined) url.searchParams.set("last_event_id", this.lastId);
    return url.toString();
  }

  private openEventSource(url: string, generation: number): Active {
    const source = new EventSource(url);
    source.onmessage = (message: MessageEvent<string>) => {
      if (generation === this.generation) this.receive(message.data, generation);
    };
    source.onerror = () => {
      // Always close: EventSource's own retry would present the spent ticket again, and it
      // stops for good on a non-200 answer anyway.
      source.close();
      if (generation !== this.generation) return;
      if (this.connected) {
        this.ended({ reason: "stream_lost" }, generation);
      } else {
        void this.probe().then((ending) => this.ended(ending, generation));
      }
    };
    return { close: () => source.close() };
  }

  /**
   * EventSource does not expose the HTTP status of a failed request. Ask once with fetch,
   * with a fresh ticket (the failed request spent the other one): 401 means the credential
   * was refused, 429 too many connections; anything else is treated as a transient failure.
   * A 200 is aborted at once (the stream itself works).
   */
  private async probe(): Promise<Ending> {
    if (this.token === undefined) return { reason: "unreachable" };
    const ticket = await this.streamTicket(this.token);
    if (typeof ticket !== "string") return ticket;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 5_000);
    try {
      const response = await fetch(this.streamUrl(ticket), {
        headers: { Accept: "text/event-stream" },
        cache: "no-store",
        signal: abort.signal,
      });
      const retryAfter = Number(response.headers.get("Retry-After"));
      const ending: Ending = { reason: `http_${response.status}`, status: response.status };
      if (response.status === 401) ending.reason = "invalid_token";
      if (response.status === 429) ending.reason = "too_many_connections";
      if (retryAfter > 0) ending.retryAfterMs = retryAfter * 1000;
      return ending;
    } catch {
      return { reason: "unreachable" };
    } finally {
      clearTimeout(timer);
      abort.abort();
    }
  }

  private openWebSocket(url: string, generation: number): Active {
    const socket = new WebSocket(url);
    socket.onmessage = (message: MessageEvent) => {
      if (generation === this.generation && typeof message.data === "string") {
        this.receive(message.data, generation);
      }
    };
    socket.onclose = (close: CloseEvent) => {
      if (generation !== this.generation) return;
      this.ended({ code: close.code, reason: close.reason || `close_${close.code}` }, generation);
    };
    return {
      close: () => {
        socket.onmessage = null;
        socket.onclose = null;
        if (socket.readyState <= WebSocket.OPEN) socket.close(1000, "client_closed");
      },
    };
  }

  // --- messages ------------------------------------------------------------------------------

  /** A message of this tab's own stream. */
  private receive(data: string, generation: number): void {
    let message: GatewayEvent;
    try {
      message = JSON.parse(data) as GatewayEvent;
    } catch {
      return;
    }
    if (typeof message !== "object" || message === null || typeof message.event !== "string") {
      return;
    }
    if (this.connected) this.armTimer(this.livenessMs, generation, "heartbeat_timeout");
    if (message.event === "disconnect") {
      this.active?.close();
      const ending: Ending = {
        code: message.code,
        reason: message.reason,
        reconnect: message.reconnect,
      };
      if (typeof message.retry_ms === "number") ending.retryMs = message.retry_ms;
      this.ended(ending, generation);
      return;
    }
    let resumed = false;
    if (message.event === "connected") {
      resumed = this.lastId !== undefined;
      this.onConnected(message, generation);
    }
    this.deliver(message, resumed);
  }

  /**
   * Hand a message to this tab's callbacks (and, from a leader, to the other tabs): from its
   * own stream or relayed by the leader. Domain events at or before the last id are dropped.
   */
  private deliver(message: GatewayEvent, resumed: boolean): void {
    const generation = this.generation;
    const domain = !SYSTEM_EVENTS.has(message.event);
    if (domain && !this.isNew(message.id)) return;
    if (this.shareRole === "leader") {
      this.post({ type: "message", from: this.tabId, message, resumed });
    }
    switch (message.event) {
      case "connected":
        // The gateway's position: resume from it if the stream ends before any event.
        if (typeof message.cursor === "string") this.lastId = message.cursor;
        this.options.onConnected?.({ message, resumed });
        break;
      case "resync":
        if (typeof message.cursor === "string") this.lastId = message.cursor;
        this.options.onResync?.(message.reason);
        break;
      default:
        break;
    }
    if (generation !== this.generation) return; // a callback above reconnected or stopped
    this.options.onMessage?.(message);
    if (domain) this.options.onEvent?.(message as DomainEvent);
  }

  /** Remember the id; false for an event at or before the last one (a duplicate). */
  private isNew(id: string | null | undefined): boolean {
    if (typeof id !== "string") return true; // legacy events carry no id
    if (this.lastId !== undefined) {
      const order = compareEventIds(id, this.lastId);
      if (order !== null && order <= 0) return false;
    }
    this.lastId = id;
    return true;
  }

  private onConnected(message: EventOf<"connected">, generation: number): void {
    this.connected = true;
    this.lastConnected = message;
    this.connectedAt = Date.now();
    this.tokenProven = true;
    this.triedRefresh = false;
    const factor = this.options.livenessFactor ?? 2.5;
    this.livenessMs = Math.max(1_000, message.heartbeat_interval * 1_000 * factor);
    this.armTimer(this.livenessMs, generation, "heartbeat_timeout");
    this.setState({ state: "open", transport: this.transportName, attempt: this.attempt });
  }

  private armTimer(ms: number, generation: number, reason: string): void {
    clearTimeout(this.livenessTimer);
    this.livenessTimer = setTimeout(() => {
      if (generation !== this.generation) return;
      this.active?.close();
      this.ended({ reason }, generation);
    }, ms);
  }

  // --- endings: the close-code catalogue (quart_gateway/live/disconnect.py) ------------------

  private ended(ending: Ending, generation: number): void {
    if (generation !== this.generation || !this.running) return;
    const wasHealthy = this.connected && Date.now() - this.connectedAt > CONNECTION_HEALTHY_MS;
    this.teardown();
    if (wasHealthy) this.attempt = 0;
    const code = ending.code;
    const reason = ending.reason;
    if (code === 1008 || ending.status === 401 || reason === "invalid_token") {
      this.refused(ending);
    } else if (code === 4002 || reason === "token_expired") {
      void this.refreshAndReconnect(ending);
    } else if (code === 1013 || reason === "overloaded") {
      // Admission control turned the stream away: come back when the gateway says.
      this.attempt += 1;
      this.schedule(ending, ending.retryMs ?? Math.max(1_000, this.backoff()));
    } else if (ending.retryMs !== undefined && ending.reconnect !== false) {
      // 1012 server_restart, 4000 max_lifetime: the gateway picked a jittered delay.
      this.schedule(ending, ending.retryMs);
    } else if (code === 1012 || reason === "server_restart") {
      // Every client of a restarting server reconnects: spread them out.
      this.schedule(ending, Math.random() * (this.options.restartJitterMs ?? 2_000));
    } else if (code === 4000 || reason === "max_lifetime") {
      this.schedule(ending, Math.random() * 1_000);
    } else if (code === 4029 || ending.status === 429) {
      this.attempt += 1;
      this.schedule(ending, Math.max(ending.retryAfterMs ?? 1_000, this.backoff()));
    } else if (ending.reconnect === false) {
      this.running = false;
      this.leaveShare();
      const { transportName: transport, attempt } = this;
      this.setState({ state: "stopped", transport, attempt, ...detail(ending) });
    } else {
      // 4008 slow_consumer, 1011 internal_error, network loss, heartbeat timeout, ...
      this.attempt += 1;
      this.schedule(ending, this.backoff());
    }
  }

  private backoff(): number {
    const { initialMs = 500, maxMs = 30_000 } = this.options.backoff ?? {};
    return backoffDelay(this.attempt - 1, initialMs, maxMs);
  }

  private schedule(ending: Ending, delayMs: number): void {
    const delay = Math.round(delayMs);
    this.setState({
      state: "waiting",
      transport: this.transportName,
      attempt: this.attempt,
      retryInMs: delay,
      ...detail(ending),
    });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.running) this.connect();
    }, delay);
  }

  /** A refused credential: once proven tokens may have expired, so refresh once; else stop. */
  private refused(ending: Ending): void {
    if (ending.reason === "invalid_token" && this.tokenProven && !this.triedRefresh) {
      void this.refreshAndReconnect(ending);
      return;
    }
    this.authFailed(ending);
  }

  private async refreshAndReconnect(ending: Ending): Promise<void> {
    this.triedRefresh = true;
    const generation = this.generation;
    try {
      const refresh = this.options.refreshToken ?? this.options.getToken;
      this.token = await refresh();
      this.tokenProven = false;
    } catch {
      this.authFailed({ ...ending, reason: "token_expired" });
      return;
    }
    if (generation === this.generation && this.running) this.schedule(ending, Math.random() * 250);
  }

  private authFailed(ending: Ending): void {
    this.running = false;
    this.teardown();
    this.leaveShare(); // another tab may hold a token that works
    const failure: AuthFailure = { reason: ending.reason, transport: this.transportName };
    if (ending.status !== undefined) failure.status = ending.status;
    if (ending.code !== undefined) failure.code = ending.code;
    const { transportName: transport, attempt } = this;
    this.setState({ state: "auth_failed", transport, attempt, ...detail(ending) });
    this.options.onAuthError?.(failure);
  }

  private setState(status: StatusChange): void {
    this.currentState = status.state;
    this.lastStatus = status;
    if (this.shareRole === "leader" && SHARED_STATES.has(status.state)) {
      this.post({ type: "status", from: this.tabId, status });
    }
    this.options.onStatus?.(status);
  }
}

function detail(ending: Ending): { reason: string; code?: number } {
  return ending.code === undefined
    ? { reason: ending.reason }
    : { reason: ending.reason, code: ending.code };
}
