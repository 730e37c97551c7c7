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
/** Statuses a leader relays to its followers: the state of the shared stream. */
const SHARED_STATES = new Set(["connecting", "open", "waiting"]);
/** How often a follower that has not heard from a leader yet says hello again. */
const HELLO_INTERVAL_MS = 1000;
/** The JWT's `sub`, read without verification: only to name the shared stream. */
export function tokenSubject(token) {
    const payload = token.split(".")[1];
    if (payload === undefined)
        return undefined;
    try {
        const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
        const claims = JSON.parse(json);
        return typeof claims.sub === "string" ? claims.sub : undefined;
    }
    catch {
        return undefined;
    }
}
function sharingSupported() {
    return (typeof navigator !== "undefined" &&
        typeof navigator.locks?.request === "function" &&
        typeof BroadcastChannel !== "undefined");
}
export class GatewayClient {
    constructor(options) {
        /** The token has been accepted before: a later refusal may mean it expired. */
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
        this.shareRole = "solo";
        this.share = null;
        /** Bumped on every join and leave of a shared stream: stale lock grants give up. */
        this.shareSession = 0;
        this.lastStatus = null;
        this.lastConnected = null;
        this.tabId = Math.random().toString(36).slice(2) + Date.now().toString(36);
        this.onOnline = () => this.retryNow();
        this.onFreeze = () => this.pause();
        this.onResume = () => this.unpause();
        this.onPageHide = (event) => {
            if (event.persisted)
                this.pause();
        };
        this.onPageShow = (event) => {
            if (event.persisted)
                this.unpause();
        };
        this.paused = false;
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
    /** The id of the last event received (or the gateway's cursor); the client resumes after it. */
    get lastEventId() {
        return this.lastId;
    }
    /** This tab's part in the shared stream. */
    get role() {
        return this.shareRole;
    }
    /** How many tabs share this tab's stream (1 when it is not shared). */
    async sharedTabs() {
        const share = this.share;
        if (share === null || !sharingSupported())
            return 1;
        const snapshot = await navigator.locks.query();
        const mine = (locks) => (locks ?? []).filter((lock) => lock.name === share.name).length;
        return Math.max(1, mine(snapshot.held) + mine(snapshot.pending));
    }
    /** Connect (or reconnect now, after `auth_failed` or `stop()`). */
    start() {
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
        }
        else {
            this.setRole("solo");
            this.connect();
        }
    }
    /** Close the connection and stop reconnecting. */
    stop() {
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
    setTransport(transport) {
        if (transport === this.transportName)
            return;
        this.transportName = transport;
        if (this.running && this.shareRole !== "follower") {
            this.teardown();
            this.connect();
        }
    }
    // --- sharing one stream among tabs ---------------------------------------------------------
    /** Wait for the tab lock: the tab that gets it holds the stream, the others are fed. */
    async joinShare() {
        const session = ++this.shareSession;
        let token;
        try {
            token = await this.currentToken();
        }
        catch {
            if (session === this.shareSession)
                this.authFailed({ reason: "token_unavailable" });
            return;
        }
        if (session !== this.shareSession || !this.running)
            return;
        const base = new URL(this.baseUrl());
        const identity = this.options.shareKey ?? tokenSubject(token) ?? "";
        const name = `gateway-client:${base.origin}:${identity}`;
        const share = {
            name,
            channel: new BroadcastChannel(name),
            abort: new AbortController(),
            release: null,
            welcomed: false,
            hello: undefined,
        };
        this.share = share;
        share.channel.onmessage = (event) => {
            if (this.share === share)
                this.onShareMessage(share, event.data);
        };
        this.setRole("follower");
        this.setState({ state: "connecting", transport: this.transportName, attempt: this.attempt });
        this.post({ type: "hello", from: this.tabId });
        share.hello = setInterval(() => {
            if (!share.welcomed)
                this.post({ type: "hello", from: this.tabId });
        }, HELLO_INTERVAL_MS);
        navigator.locks
            .request(name, { signal: share.abort.signal }, () => {
            if (this.share !== share)
                return undefined; // left while waiting
            return new Promise((release) => {
                share.release = release;
                this.lead(share);
            });
        })
            .catch(() => undefined); // aborted: this tab left before it got the lock
    }
    lead(share) {
        clearInterval(share.hello);
        share.welcomed = true;
        this.setRole("leader");
        this.post({ type: "leader", from: this.tabId });
        this.connect(); // resumes after the last id this tab saw, as a follower or before
    }
    leaveShare() {
        const share = this.share;
        this.shareSession += 1;
        if (share === null)
            return;
        this.share = null;
        clearInterval(share.hello);
        share.abort.abort();
        share.release?.(); // the next tab in line takes over
        share.channel.close();
        this.lastConnected = null;
        this.setRole("solo");
    }
    /** Frozen or put in the back/forward cache: hand the stream to another tab. */
    pause() {
        if (!this.running || this.share === null)
            return;
        this.paused = true;
        this.teardown();
        this.leaveShare();
    }
    unpause() {
        if (!this.paused)
            return;
        this.paused = false;
        if (this.running)
            void this.joinShare();
    }
    post(message) {
        try {
            this.share?.channel.postMessage(message);
        }
        catch {
            // a closed channel: this tab is leaving
        }
    }
    onShareMessage(share, message) {
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
                if (!share.welcomed)
                    this.post({ type: "hello", from: this.tabId });
                break;
            case "welcome":
                if (message.to !== this.tabId || share.welcomed)
                    break;
                share.welcomed = true;
                clearInterval(share.hello);
                if (message.lastId !== null)
                    this.lastId = message.lastId;
                if (message.status !== null)
                    this.followStatus(message.status);
                // A tab that joins has no state yet: it hydrates (`resumed` false).
                if (message.connected !== null)
                    this.deliver(message.connected, false);
                break;
            case "status":
                if (share.welcomed)
                    this.followStatus(message.status);
                break;
            case "message":
                if (share.welcomed)
                    this.deliver(message.message, message.resumed);
                break;
            default:
                break;
        }
    }
    followStatus(status) {
        if (this.running)
            this.setState(status);
    }
    setRole(role) {
        if (role === this.shareRole)
            return;
        this.shareRole = role;
        this.options.onShare?.(role);
    }
    // --- connecting ----------------------------------------------------------------------------
    baseUrl() {
        return this.options.url ?? window.location.origin;
    }
    teardown() {
        this.generation += 1;
        clearTimeout(this.retryTimer);
        clearTimeout(this.livenessTimer);
        this.retryTimer = undefined;
        this.active?.close();
        this.active = null;
        this.connected = false;
        this.lastConnected = null;
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
        void this.currentToken().then(async (token) => {
            if (generation !== this.generation || !this.running)
                return;
            const ticket = await this.streamTicket(token);
            if (generation !== this.generation || !this.running)
                return;
            if (typeof ticket !== "string") {
                this.ended(ticket, generation);
                return;
            }
            const url = this.streamUrl(ticket);
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
    /**
     * A single-use ticket for the next stream, or how getting one failed: 401 is a refused
     * token, 429 a rate limit (with Retry-After); anything else is transient.
     */
    async streamTicket(token) {
        if (this.options.getTicket !== undefined) {
            try {
                return await this.options.getTicket(token);
            }
            catch {
                return { reason: "ticket_unavailable" };
            }
        }
        let response;
        try {
            response = await fetch(new URL("/v1/stream-tickets", this.baseUrl()), {
                method: "POST",
                headers: { Authorization: `Bearer ${token}` },
                cache: "no-store",
            });
        }
        catch {
            return { reason: "unreachable" };
        }
        if (response.ok) {
            try {
                const body = (await response.json());
                if (typeof body.ticket === "string") {
                    this.tokenProven = true;
                    return body.ticket;
                }
            }
            catch {
                // not the answer of a gateway: transient
            }
            return { reason: "ticket_unavailable", status: response.status };
        }
        const ending = { reason: `http_${response.status}`, status: response.status };
        if (response.status === 401)
            ending.reason = "invalid_token";
        if (response.status === 429)
            ending.reason = "rate_limited";
        const retryAfter = Number(response.headers.get("Retry-After"));
        if (retryAfter > 0)
            ending.retryAfterMs = retryAfter * 1000;
        return ending;
    }
    streamUrl(ticket) {
        const url = new URL(this.transportName === "ws" ? "/ws" : "/events", this.baseUrl());
        if (this.transportName === "ws")
            url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
        url.searchParams.set("ticket", ticket);
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
            // Always close: EventSource's own retry would present the spent ticket again, and it
            // stops for good on a non-200 answer anyway.
            source.close();
            if (generation !== this.generation)
                return;
            if (this.connected) {
                this.ended({ reason: "stream_lost" }, generation);
            }
            else {
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
    async probe() {
        if (this.token === undefined)
            return { reason: "unreachable" };
        const ticket = await this.streamTicket(this.token);
        if (typeof ticket !== "string")
            return ticket;
        const abort = new AbortController();
        const timer = setTimeout(() => abort.abort(), 5000);
        try {
            const response = await fetch(this.streamUrl(ticket), {
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
    /** A message of this tab's own stream. */
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
        if (message.event === "disconnect") {
            this.active?.close();
            const ending = {
                code: message.code,
                reason: message.reason,
                reconnect: message.reconnect,
            };
            if (typeof message.retry_ms === "number")
                ending.retryMs = message.retry_ms;
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
    deliver(message, resumed) {
        const generation = this.generation;
        const domain = !SYSTEM_EVENTS.has(message.event);
        if (domain && !this.isNew(message.id))
            return;
        if (this.shareRole === "leader") {
            this.post({ type: "message", from: this.tabId, message, resumed });
        }
        switch (message.event) {
            case "connected":
                // The gateway's position: resume from it if the stream ends before any event.
                if (typeof message.cursor === "string")
                    this.lastId = message.cursor;
                this.options.onConnected?.({ message, resumed });
                break;
            case "resync":
                if (typeof message.cursor === "string")
                    this.lastId = message.cursor;
                this.options.onResync?.(message.reason);
                break;
            default:
                break;
        }
        if (generation !== this.generation)
            return; // a callback above reconnected or stopped
        this.options.onMessage?.(message);
        if (domain)
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
        this.connected = true;
        this.lastConnected = message;
        this.connectedAt = Date.now();
        this.tokenProven = true;
        this.triedRefresh = false;
        const factor = this.options.livenessFactor ?? 2.5;
        this.livenessMs = Math.max(1000, message.heartbeat_interval * 1000 * factor);
        this.armTimer(this.livenessMs, generation, "heartbeat_timeout");
        this.setState({ state: "open", transport: this.transportName, attempt: this.attempt });
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
        const reason = ending.reason;
        if (code === 1008 || ending.status === 401 || reason === "invalid_token") {
            this.refused(ending);
        }
        else if (code === 4002 || reason === "token_expired") {
            void this.refreshAndReconnect(ending);
        }
        else if (code === 1013 || reason === "overloaded") {
            // Admission control turned the stream away: come back when the gateway says.
            this.attempt += 1;
            this.schedule(ending, ending.retryMs ?? Math.max(1000, this.backoff()));
        }
        else if (ending.retryMs !== undefined && ending.reconnect !== false) {
            // 1012 server_restart, 4000 max_lifetime: the gateway picked a jittered delay.
            this.schedule(ending, ending.retryMs);
        }
        else if (code === 1012 || reason === "server_restart") {
            // Every client of a restarting server reconnects: spread them out.
            this.schedule(ending, Math.random() * (this.options.restartJitterMs ?? 2000));
        }
        else if (code === 4000 || reason === "max_lifetime") {
            this.schedule(ending, Math.random() * 1000);
        }
        else if (code === 4029 || ending.status === 429) {
            this.attempt += 1;
            this.schedule(ending, Math.max(ending.retryAfterMs ?? 1000, this.backoff()));
        }
        else if (ending.reconnect === false) {
            this.running = false;
            this.leaveShare();
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
    /** A refused credential: once proven tokens may have expired, so refresh once; else stop. */
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
        this.leaveShare(); // another tab may hold a token that works
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
        this.lastStatus = status;
        if (this.shareRole === "leader" && SHARED_STATES.has(status.state)) {
            this.post({ type: "status", from: this.tabId, status });
        }
        this.options.onStatus?.(status);
    }
}
function detail(ending) {
    return ending.code === undefined
        ? { reason: ending.reason }
        : { reason: ending.reason, code: ending.code };
}
