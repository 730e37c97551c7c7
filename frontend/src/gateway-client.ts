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
 * The client reconnects by itself and resumes after the last event id it saw, on both
 * transports (`?last_event_id=`). It never relies on EventSource's own reconnect: that one
 * stops for good on a 401 and keeps reusing the token in its URL.
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
  /** Returns the current JWT; called before every connection attempt. */
  getToken: () => string | Promise<string>;
  /** Returns a new JWT after `token_expired`. Default: `getToken` again. */
  refreshToken?: () => string | Promise<string>;
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

/** How a connection ended, on either transport. */
interface Ending {
  code?: number;
  reason: string;
  /** The gateway's `reconnect` flag from a `disconnect` message, when there was one. */
  reconnect?: boolean;
  /** HTTP status learnt by probing /events after an EventSource failure. */
  status?: number;
  retryAfterMs?: number;
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

export class GatewayClient {
  private readonly options: GatewayClientOptions;
  private transportName: Transport;
  private lastId: string | undefined;
  private token: string | undefined;
  /** The token has opened a stream before: a later refusal may mean it expired. */
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
  private readonly onOnline = (): void => this.retryNow();

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

  /** The id of the last event received; the client resumes after it. */
  get lastEventId(): string | undefined {
    return this.lastId;
  }

  /** Connect (or reconnect now, after `auth_failed` or `stop()`). */
  start(): void {
    this.running = true;
    this.attempt = 0;
    this.triedRefresh = false;
    this.token = undefined;
    this.tokenProven = false;
    if (typeof window !== "undefined") window.addEventListener("online", this.onOnline);
    this.connect();
  }

  /** Close the connection and stop reconnecting. */
  stop(): void {
    this.running = false;
    this.teardown();
    if (typeof window !== "undefined") window.removeEventListener("online", this.onOnline);
    this.setState({ state: "stopped", transport: this.transportName, attempt: this.attempt });
  }

  /** Switch transports; reconnects at once and resumes after the last event id. */
  setTransport(transport: Transport): void {
    if (transport === this.transportName) return;
    this.transportName = transport;
    if (this.running) {
      this.teardown();
      this.connect();
    }
  }

  // --- connecting ----------------------------------------------------------------------------

  private teardown(): void {
    this.generation += 1;
    clearTimeout(this.retryTimer);
    clearTimeout(this.livenessTimer);
    this.retryTimer = undefined;
    this.active?.close();
    this.active = null;
    this.connected = false;
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
      (token) => {
        if (generation !== this.generation || !this.running) return;
        const url = this.streamUrl(token);
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

  private streamUrl(token: string): string {
    const base = this.options.url ?? window.location.origin;
    const url = new URL(this.transportName === "ws" ? "/ws" : "/events", base);
    if (this.transportName === "ws") url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("token", token);
    if (this.lastId !== undefined) url.searchParams.set("last_event_id", this.lastId);
    return url.toString();
  }

  private openEventSource(url: string, generation: number): Active {
    const source = new EventSource(url);
    source.onmessage = (message: MessageEvent<string>) => {
      if (generation === this.generation) this.receive(message.data, generation);
    };
    source.onerror = () => {
      // Always close: EventSource's own retry would reuse the token in the URL, and it stops
      // for good on a non-200 answer anyway.
      source.close();
      if (generation !== this.generation) return;
      if (this.connected) {
        this.ended({ reason: "stream_lost" }, generation);
      } else {
        void this.probe(url).then((ending) => this.ended(ending, generation));
      }
    };
    return { close: () => source.close() };
  }

  /**
   * EventSource does not expose the HTTP status of a failed request. Ask once with fetch:
   * 401 means the token was refused, 429 too many connections; anything else is treated as
   * a transient failure. A 200 is aborted at once (the stream itself works).
   */
  private async probe(url: string): Promise<Ending> {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 5_000);
    try {
      const response = await fetch(url, {
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
    switch (message.event) {
      case "connected":
        this.onConnected(message, generation);
        break;
      case "ping":
        break;
      case "resync":
        this.options.onResync?.(message.reason);
        break;
      case "disconnect":
        this.active?.close();
        this.ended(
          { code: message.code, reason: message.reason, reconnect: message.reconnect },
          generation,
        );
        return;
      default:
        if (!this.isNew(message.id)) return;
        break;
    }
    if (generation !== this.generation) return; // a callback above reconnected or stopped
    this.options.onMessage?.(message);
    if (!SYSTEM_EVENTS.has(message.event)) this.options.onEvent?.(message as DomainEvent);
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
    const resumed = this.lastId !== undefined;
    this.connected = true;
    this.connectedAt = Date.now();
    this.tokenProven = true;
    this.triedRefresh = false;
    const factor = this.options.livenessFactor ?? 2.5;
    this.livenessMs = Math.max(1_000, message.heartbeat_interval * 1_000 * factor);
    this.armTimer(this.livenessMs, generation, "heartbeat_timeout");
    this.setState({ state: "open", transport: this.transportName, attempt: this.attempt });
    this.options.onConnected?.({ message, resumed });
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
    if (code === 1008 || ending.status === 401 || ending.reason === "invalid_token") {
      this.refused(ending);
    } else if (code === 4002 || ending.reason === "token_expired") {
      void this.refreshAndReconnect(ending);
    } else if (code === 1012 || ending.reason === "server_restart") {
      // Every client of a restarting server reconnects: spread them out.
      this.schedule(ending, Math.random() * (this.options.restartJitterMs ?? 2_000));
    } else if (code === 4029 || ending.status === 429) {
      this.attempt += 1;
      this.schedule(ending, Math.max(ending.retryAfterMs ?? 1_000, this.backoff()));
    } else if (ending.reconnect === false) {
      this.running = false;
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

  /** A refused token: once proven tokens may have expired, so refresh once; else stop. */
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
    const failure: AuthFailure = { reason: ending.reason, transport: this.transportName };
    if (ending.status !== undefined) failure.status = ending.status;
    if (ending.code !== undefined) failure.code = ending.code;
    const { transportName: transport, attempt } = this;
    this.setState({ state: "auth_failed", transport, attempt, ...detail(ending) });
    this.options.onAuthError?.(failure);
  }

  private setState(status: StatusChange): void {
    this.currentState = status.state;
    this.options.onStatus?.(status);
  }
}

function detail(ending: Ending): { reason: string; code?: number } {
  return ending.code === undefined
    ? { reason: ending.reason }
    : { reason: ending.reason, code: ending.code };
}
