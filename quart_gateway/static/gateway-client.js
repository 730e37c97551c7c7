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
const CONNECTION_HEALTHY_MS = 10000;
/** Full jitter: a random delay in [0, min(max, initial * 2^attempt)]. */
export function backoffDelay(attempt, initialMs = 500, maxMs = 30000) {
    const window = Math.min(maxMs, initialMs * 2 ** Math.max(0, attempt));
    return Math.floor(Math.random() * window);
}
/** Compare Redis stream ids (`<ms>-<seq>`); null when either is not one. */
export function compareEventIds(a, b) {
    const pa = /^(\d+)-(\d+)$/.exec(a);
    const pb = /^(\d+)-(\d+)$/.exec(b);
    if (!pa || !pb)
        return null;
    const ms = BigInt(pa[1]) - BigInt(pb[1]);
    if (ms !== 0n)
        return ms < 0n ? -1 : 1;
    const seq = BigInt(pa[2]) - BigInt(pb[2]);
    return seq === 0n ? 0 : seq < 0n ? -1 : 1;
}
const SYSTEM_EVENTS = new Set(["connected", "ping", "resync", "disconnect"]);
export class GatewayClient {
    constructor(options) {
        /** The token has opened a stream before: a later refusal may mean it expired. */
        this.tokenProven = false;
        this.triedRefresh = false;
        this.generation = 0;
        this.active = null;
        this.attempt = 0;
        this.connectedAt = 0;
        this.connected = false;
        this.running = false;
        this.currentState = "stopped";
        this.livenessMs = 0;
        this.onOnline = () => this.retryNow();
        this.options = options;
        this.transportName = options.transport ?? "sse";
        this.lastId = options.lastEventId;
    }
    get state() {
        return this.currentState;
    }
    get transport() {
        return this.transportName;
    }
    /** The id of the last event received; the client resumes after it. */
    get lastEventId() {
        return this.lastId;
    }
    /** Connect (or reconnect now, after `auth_failed` or `stop()`). */
    start() {
        this.running = true;
        this.attempt = 0;
        this.triedRefresh = false;
        this.token = undefined;
        this.tokenProven = false;
        if (typeof window !== "undefined")
            window.addEventListener("online", this.onOnline);
        this.connect();
    }
    /** Close the connection and stop reconnecting. */
    stop() {
        this.running = false;
        this.teardown();
        if (typeof window !== "undefined")
            window.removeEventListener("online", this.onOnline);
        this.setState({ state: "stopped", transport: this.transportName, attempt: this.attempt });
    }
    /** Switch transports; reconnects at once and resumes after the last event id. */
    setTransport(transport) {
        if (transport === this.transportName)
            return;
        this.transportName = transport;
        if (this.running) {
            this.teardown();
            this.connect();
        }
    }
    // --- connecting ----------------------------------------------------------------------------
    teardown() {
        this.generation += 1;
        clearTimeout(this.retryTimer);
        clearTimeout(this.livenessTimer);
        this.retryTimer = undefined;
        this.active?.close();
        this.active = null;
        this.connected = false;
    }
    retryNow() {
        if (this.running && this.retryTimer !== undefined) {
            clearTimeout(this.retryTimer);
            this.retryTimer = undefined;
            this.connect();
        }
    }
    connect() {
        this.teardown();
        const generation = this.generation;
        this.setState({ state: "connecting", transport: this.transportName, attempt: this.attempt });
        void this.currentToken().then((token) => {
            if (generation !== this.generation || !this.running)
                return;
            const url = this.streamUrl(token);
            this.active =
                this.transportName === "ws"
                    ? this.openWebSocket(url, generation)
                    : this.openEventSource(url, generation);
            this.armTimer(this.options.connectTimeoutMs ?? 15000, generation, "connect_timeout");
        }, () => {
            if (generation === this.generation)
                this.authFailed({ reason: "token_unavailable" });
        });
    }
    async currentToken() {
        if (this.token === undefined) {
            this.token = await this.options.getToken();
            this.tokenProven = false;
        }
        return this.token;
    }
    streamUrl(token) {
        const base = this.options.url ?? window.location.origin;
        const url = new URL(this.transportName === "ws" ? "/ws" : "/events", base);
        if (this.transportName === "ws")
            url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
        url.searchParams.set("token", token);
        if (this.lastId !== undefined)
            url.searchParams.set("last_event_id", this.lastId);
        return url.toString();
    }
    openEventSource(url, generation) {
        const source = new EventSource(url);
        source.onmessage = (message) => {
            if (generation === this.generation)
                this.receive(message.data, generation);
        };
        source.onerror = () => {
            // Always close: EventSource's own retry would reuse the token in the URL, and it stops
            // for good on a non-200 answer anyway.
            source.close();
            if (generation !== this.generation)
                return;
            if (this.connected) {
                this.ended({ reason: "stream_lost" }, generation);
            }
            else {
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
    async probe(url) {
        const abort = new AbortController();
        const timer = setTimeout(() => abort.abort(), 5000);
        try {
            const response = await fetch(url, {
                headers: { Accept: "text/event-stream" },
                cache: "no-store",
                signal: abort.signal,
            });
            const retryAfter = Number(response.headers.get("Retry-After"));
            const ending = { reason: `http_${response.status}`, status: response.status };
            if (response.status === 401)
                ending.reason = "invalid_token";
            if (response.status === 429)
                ending.reason = "too_many_connections";
            if (retryAfter > 0)
                ending.retryAfterMs = retryAfter * 1000;
            return ending;
        }
        catch {
            return { reason: "unreachable" };
        }
        finally {
            clearTimeout(timer);
            abort.abort();
        }
    }
    openWebSocket(url, generation) {
        const socket = new WebSocket(url);
        socket.onmessage = (message) => {
            if (generation === this.generation && typeof message.data === "string") {
                this.receive(message.data, generation);
            }
        };
        socket.onclose = (close) => {
            if (generation !== this.generation)
                return;
            this.ended({ code: close.code, reason: close.reason || `close_${close.code}` }, generation);
        };
        return {
            close: () => {
                socket.onmessage = null;
                socket.onclose = null;
                if (socket.readyState <= WebSocket.OPEN)
                    socket.close(1000, "client_closed");
            },
        };
    }
    // --- messages ------------------------------------------------------------------------------
    receive(data, generation) {
        let message;
        try {
            message = JSON.parse(data);
        }
        catch {
            return;
        }
        if (typeof message !== "object" || message === null || typeof message.event !== "string") {
            return;
        }
        if (this.connected)
            this.armTimer(this.livenessMs, generation, "heartbeat_timeout");
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
                this.ended({ code: message.code, reason: message.reason, reconnect: message.reconnect }, generation);
                return;
            default:
                if (!this.isNew(message.id))
                    return;
                break;
        }
        if (generation !== this.generation)
            return; // a callback above reconnected or stopped
        this.options.onMessage?.(message);
        if (!SYSTEM_EVENTS.has(message.event))
            this.options.onEvent?.(message);
    }
    /** Remember the id; false for an event at or before the last one (a duplicate). */
    isNew(id) {
        if (typeof id !== "string")
            return true; // legacy events carry no id
        if (this.lastId !== undefined) {
            const order = compareEventIds(id, this.lastId);
            if (order !== null && order <= 0)
                return false;
        }
        this.lastId = id;
        return true;
    }
    onConnected(message, generation) {
        const resumed = this.lastId !== undefined;
        this.connected = true;
        this.connectedAt = Date.now();
        this.tokenProven = true;
        this.triedRefresh = false;
        const factor = this.options.livenessFactor ?? 2.5;
        this.livenessMs = Math.max(1000, message.heartbeat_interval * 1000 * factor);
        this.armTimer(this.livenessMs, generation, "heartbeat_timeout");
        this.setState({ state: "open", transport: this.transportName, attempt: this.attempt });
        this.options.onConnected?.({ message, resumed });
    }
    armTimer(ms, generation, reason) {
        clearTimeout(this.livenessTimer);
        this.livenessTimer = setTimeout(() => {
            if (generation !== this.generation)
                return;
            this.active?.close();
            this.ended({ reason }, generation);
        }, ms);
    }
    // --- endings: the close-code catalogue (quart_gateway/live/disconnect.py) ------------------
    ended(ending, generation) {
        if (generation !== this.generation || !this.running)
            return;
        const wasHealthy = this.connected && Date.now() - this.connectedAt > CONNECTION_HEALTHY_MS;
        this.teardown();
        if (wasHealthy)
            this.attempt = 0;
        const code = ending.code;
        if (code === 1008 || ending.status === 401 || ending.reason === "invalid_token") {
            this.refused(ending);
        }
        else if (code === 4002 || ending.reason === "token_expired") {
            void this.refreshAndReconnect(ending);
        }
        else if (code === 1012 || ending.reason === "server_restart") {
            // Every client of a restarting server reconnects: spread them out.
            this.schedule(ending, Math.random() * (this.options.restartJitterMs ?? 2000));
        }
        else if (code === 4029 || ending.status === 429) {
            this.attempt += 1;
            this.schedule(ending, Math.max(ending.retryAfterMs ?? 1000, this.backoff()));
        }
        else if (ending.reconnect === false) {
            this.running = false;
            const { transportName: transport, attempt } = this;
            this.setState({ state: "stopped", transport, attempt, ...detail(ending) });
        }
        else {
            // 4008 slow_consumer, 1011 internal_error, network loss, heartbeat timeout, ...
            this.attempt += 1;
            this.schedule(ending, this.backoff());
        }
    }
    backoff() {
        const { initialMs = 500, maxMs = 30000 } = this.options.backoff ?? {};
        return backoffDelay(this.attempt - 1, initialMs, maxMs);
    }
    schedule(ending, delayMs) {
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
            if (this.running)
                this.connect();
        }, delay);
    }
    /** A refused token: once proven tokens may have expired, so refresh once; else stop. */
    refused(ending) {
        if (ending.reason === "invalid_token" && this.tokenProven && !this.triedRefresh) {
            void this.refreshAndReconnect(ending);
            return;
        }
        this.authFailed(ending);
    }
    async refreshAndReconnect(ending) {
        this.triedRefresh = true;
        const generation = this.generation;
        try {
            const refresh = this.options.refreshToken ?? this.options.getToken;
            this.token = await refresh();
            this.tokenProven = false;
        }
        catch {
            this.authFailed({ ...ending, reason: "token_expired" });
            return;
        }
        if (generation === this.generation && this.running)
            this.schedule(ending, Math.random() * 250);
    }
    authFailed(ending) {
        this.running = false;
        this.teardown();
        const failure = { reason: ending.reason, transport: this.transportName };
        if (ending.status !== undefined)
            failure.status = ending.status;
        if (ending.code !== undefined)
            failure.code = ending.code;
        const { transportName: transport, attempt } = this;
        this.setState({ state: "auth_failed", transport, attempt, ...detail(ending) });
        this.options.onAuthError?.(failure);
    }
    setState(status) {
        this.currentState = status.state;
        this.options.onStatus?.(status);
    }
}
function detail(ending) {
    return ending.code === undefined
        ? { reason: ending.reason }
        : { reason: ending.reason, code: ending.code };
}
