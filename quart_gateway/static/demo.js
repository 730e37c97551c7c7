// The dev-mode demo page (GET /demo): mints a token through /dev/token, opens a stream with the
// browser client (with a stream ticket; the tabs of this browser share one stream), hydrates
// batch status after `connected` and on `resync`, and lists events.
import { GatewayClient } from "./gateway-client.js";
const $ = (id) => document.getElementById(id);
const userInput = $("user");
const transportSelect = $("transport");
const connection = $("connection");
const sharing = $("sharing");
const errorBox = $("error");
const eventList = $("events");
const batchBox = $("batches");
const params = new URLSearchParams(window.location.search);
const batches = new Map();
let token = "";
async function mintToken() {
    const response = await fetch("/dev/token", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ user_id: userInput.value.trim() }),
    });
    if (!response.ok)
        throw new Error(`/dev/token answered ${response.status}`);
    token = (await response.json()).token;
    return token;
}
/** Fetch the status of the given batches (default: every batch on the page) and render it. */
async function hydrate(batchIds = [...batches.keys()]) {
    await Promise.all(batchIds.map(async (batchId) => {
        const response = await fetch(`/v1/batches/${encodeURIComponent(batchId)}/status`, {
            headers: { Authorization: `Bearer ${token}` },
        });
        if (response.ok)
            batches.set(batchId, (await response.json()));
    }));
    renderBatches();
}
function renderBatches() {
    if (batches.size === 0)
        return;
    batchBox.replaceChildren(...[...batches].map(([batchId, status]) => {
        const card = document.createElement("div");
        card.className = "batch";
        card.dataset["batchId"] = batchId;
        const title = document.createElement("strong");
        title.textContent = batchId;
        card.append(title);
        const state = (status?.pipeline_state ?? {});
        const essays = (state["essays"] ?? {});
        const rows = [
            ["source", status?.status ?? "not hydrated yet"],
            ["phase", String(state["phase"] ?? "-")],
            ["spellcheck", String(state["spellcheck"] ?? "-")],
            ["locked", String(state["locked"] ?? "-")],
            ...Object.entries(essays),
            ["last updated", status?.last_updated ?? "-"],
        ];
        const table = document.createElement("table");
        for (const [name, value] of rows) {
            const row = table.insertRow();
            row.insertCell().textContent = name;
            row.insertCell().textContent = value;
        }
        card.append(table);
        return card;
    }));
}
function summary(event) {
    switch (event.event) {
        case "batch_file_added":
        case "batch_file_removed":
            return `${event.batch_id} ${event.filename}`;
        case "batch_locked_for_processing":
            return `${event.batch_id}: ${event.reason}`;
        case "essay_status_updated":
            return `${event.batch_id} ${event.essay_id} → ${event.status}`;
        case "batch_phase_concluded":
            return `${event.batch_id} ${event.phase} → ${event.status}`;
        case "resync":
            return `re-hydrating (${event.reason})`;
        case "connected":
            return `${event.transport}, heartbeat ${event.heartbeat_interval}s`;
        default:
            return "";
    }
}
function logEvent(event) {
    const item = document.createElement("li");
    item.dataset["event"] = event.event;
    if (event.id)
        item.dataset["eventId"] = event.id;
    const type = document.createElement("span");
    type.className = "type";
    type.textContent = event.event;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = ` ${event.id ?? ""} ${summary(event)}`;
    item.append(type, meta);
    eventList.prepend(item);
}
function showStatus(status) {
    connection.dataset["state"] = status.state;
    connection.dataset["transport"] = status.transport;
    const retry = status.retryInMs === undefined ? "" : ` (retry in ${status.retryInMs} ms)`;
    const reason = status.reason ? `, ${status.reason}` : "";
    connection.textContent = `${status.state} over ${status.transport}${reason}${retry}`;
    if (status.state === "open")
        errorBox.classList.remove("shown");
}
/** How many tabs of this browser share the stream, and this tab's part in it. */
async function showSharing() {
    const tabs = await client.sharedTabs();
    sharing.dataset["role"] = client.role;
    sharing.dataset["tabs"] = String(tabs);
    sharing.textContent =
        client.role === "solo"
            ? "own stream"
            : `${tabs} tab${tabs === 1 ? "" : "s"} share one stream (this one: ${client.role})`;
}
const client = new GatewayClient({
    transport: params.get("transport") === "ws" ? "ws" : "sse",
    getToken: mintToken,
    // Hydrate after `connected` (nothing published from then on can be missed) and on `resync`.
    onConnected: () => void hydrate(),
    onResync: () => void hydrate(),
    onMessage: (message) => {
        if (message.event !== "ping")
            logEvent(message);
    },
    onEvent: (event) => {
        // A real app would apply the event to its state; the demo re-reads that batch's status.
        if ("batch_id" in event && typeof event.batch_id === "string") {
            if (!batches.has(event.batch_id))
                batches.set(event.batch_id, null);
            void hydrate([event.batch_id]);
        }
    },
    onStatus: showStatus,
    onShare: () => void showSharing(),
    onAuthError: (failure) => {
        errorBox.textContent = `Authentication failed (${failure.reason}); not retrying.`;
        errorBox.classList.add("shown");
    },
});
transportSelect.value = client.transport;
transportSelect.addEventListener("change", () => {
    client.setTransport(transportSelect.value);
});
userInput.addEventListener("change", () => {
    batches.clear();
    batchBox.replaceChildren();
    eventList.replaceChildren();
    client.stop();
    client.start();
});
$("simulate").addEventListener("click", async () => {
    const response = await fetch("/dev/simulate", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ user_id: userInput.value.trim() }),
    });
    if (response.ok) {
        const { batch_id } = (await response.json());
        batches.set(batch_id, null);
        renderBatches();
    }
});
client.start();
setInterval(() => void showSharing(), 2000); // tabs come and go
