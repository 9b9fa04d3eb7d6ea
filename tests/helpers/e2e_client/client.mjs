// A second Matrix client for the imgbot tests: matrix-js-sdk with Rust crypto, not nio.
//
// One process is one logged-in device. It reads one JSON request per line on stdin,
//   {"id": 1, "cmd": "login", "args": {...}}
// and answers each with one JSON line on stdout,
//   {"id": 1, "ok": true, "result": {...}}  or  {"id": 1, "ok": false, "error": "..."}.
// Requests run concurrently (answers may come out of order). Everything else the SDK or
// this script prints goes to stderr, so stdout carries nothing but answers.
//
// The client shares room keys only with devices cross-signed by their owner and refuses to
// decrypt events from devices that are not (OnlySignedDevicesIsolationMode), which is how a
// careful real user's client behaves, so a bot that has not cross-signed its device fails.

import { createHash, randomBytes, webcrypto } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { createInterface } from "node:readline";

// Before the SDK is loaded: its logger and the Rust tracing layer write through console.
const DEBUG = process.env.E2E_CLIENT_DEBUG === "1";
function toStderr(...parts) {
    process.stderr.write(parts.map((p) => (typeof p === "string" ? p : printable(p))).join(" ") + "\n");
}
function printable(value) {
    if (value instanceof Error) return value.stack || String(value);
    try {
        return JSON.stringify(value);
    } catch {
        return String(value);
    }
}
console.log = console.info = console.warn = console.error = console.trace = toStderr;
console.debug = DEBUG ? toStderr : () => {};
// a stray SDK promise must not kill the device in the middle of a test
process.on("unhandledRejection", (e) => toStderr("unhandled rejection:", e));

const sdk = await import("matrix-js-sdk");
const { logger } = await import("matrix-js-sdk/lib/logger.js");
const cryptoApi = await import("matrix-js-sdk/lib/crypto-api/index.js");
const RustSdkCryptoJs = await import("@matrix-org/matrix-sdk-crypto-wasm");
logger.setLevel(DEBUG ? "debug" : "warn");

const { ClientEvent, RoomEvent, SyncState, PendingEventOrdering } = sdk;
const { OnlySignedDevicesIsolationMode, AllDevicesIsolationMode } = cryptoApi;
const { EventShieldColour, EventShieldReason } = cryptoApi;

// Decryption failures that may still turn into a success when a room key arrives later.
const TRANSIENT_FAILURES = new Set(["MEGOLM_UNKNOWN_INBOUND_SESSION_ID", "OLM_UNKNOWN_MESSAGE_INDEX"]);

let client = null;
let password = null;
const log = []; // every timeline event seen, in arrival order: {index, event}
const seen = new Set();

// ---------------------------------------------------------------- helpers

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(what, timeoutS, check, intervalMs = 100) {
    const deadline = Date.now() + timeoutS * 1000;
    for (;;) {
        const value = await check();
        if (value) return value;
        if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutS} s: ${what}`);
        await sleep(intervalMs);
    }
}

async function withTimeout(promise, timeoutS, what) {
    let timer;
    const late = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${timeoutS} s: ${what}`)), timeoutS * 1000);
    });
    try {
        return await Promise.race([promise, late]);
    } finally {
        clearTimeout(timer);
    }
}

function needClient() {
    if (!client) throw new Error("not logged in");
    return client;
}

// Matrix wants unpadded standard base64 for iv and hashes, unpadded base64url in the JWK.
const b64 = (bytes) => Buffer.from(bytes).toString("base64").replace(/=+$/, "");
const b64url = (bytes) => Buffer.from(bytes).toString("base64url");
const unb64 = (text) => Buffer.from(text, "base64"); // accepts padded, unpadded and url-safe

function parseMxc(mxc) {
    const m = /^mxc:\/\/([^/]+)\/([^/?#]+)$/.exec(mxc || "");
    if (!m) throw new Error(`not an mxc URI: ${JSON.stringify(mxc)}`);
    return { server: m[1], mediaId: m[2] };
}

function pngSize(bytes) {
    const magic = "89504e470d0a1a0a";
    if (bytes.length < 24 || bytes.subarray(0, 8).toString("hex") !== magic) return null;
    return { w: bytes.readUInt32BE(16), h: bytes.readUInt32BE(20) };
}

async function roomIsEncrypted(roomId) {
    return needClient().getCrypto().isEncryptionEnabledInRoom(roomId);
}

async function assertEncrypted(roomId) {
    if (!(await roomIsEncrypted(roomId))) {
        throw new Error(`${roomId} is not (yet) encrypted here: refusing to send in clear`);
    }
}

function membership(roomId, userId) {
    const room = needClient().getRoom(roomId);
    return room?.getMember(userId)?.membership ?? null;
}

async function describe(index, event) {
    const c = needClient();
    const failed = event.isDecryptionFailure();
    const encrypted = event.isEncrypted();
    let shield = null;
    if (encrypted && !failed && !event.isBeingDecrypted()) {
        const info = await c.getCrypto().getEncryptionInfoForEvent(event);
        if (info) {
            shield = {
                colour: EventShieldColour[info.shieldColour],
                reason: info.shieldReason === null ? null : EventShieldReason[info.shieldReason],
            };
        }
    }
    const reason = event.decryptionFailureReason ?? null;
    return {
        index,
        event_id: event.getId(),
        room_id: event.getRoomId(),
        sender: event.getSender(),
        type: event.getType(),
        wire_type: event.getWireType(),
        content: event.getContent(),
        origin_server_ts: event.getTs(),
        encrypted,
        decrypted:
            encrypted && !failed && !event.isBeingDecrypted() && event.getType() !== "m.room.encrypted",
        decryption_failure: failed ? reason : null,
        // settled: decrypted, or failed for a reason no later room key can fix
        settled:
            !encrypted || (!event.isBeingDecrypted() && !(failed && TRANSIENT_FAILURES.has(reason))),
        sender_device_id: encrypted ? (event.getWireContent().device_id ?? null) : null,
        shield,
    };
}

function matches(event, { roomId, sender, types }) {
    if (roomId && event.getRoomId() !== roomId) return false;
    if (sender && event.getSender() !== sender) return false;
    if (types && types.length) {
        // an event not decrypted (yet) matches any type: its real type is unknown
        const undecided = event.getType() === "m.room.encrypted" || event.isDecryptionFailure();
        if (!undecided && !types.includes(event.getType())) return false;
    }
    return true;
}

async function encryptAttachment(plain) {
    const keyBytes = randomBytes(32);
    // the spec's counter is the low 64 bits of the IV, which start at zero
    const iv = Buffer.concat([randomBytes(8), Buffer.alloc(8)]);
    const key = await webcrypto.subtle.importKey("raw", keyBytes, "AES-CTR", false, ["encrypt"]);
    const algorithm = { name: "AES-CTR", counter: iv, length: 64 };
    const cipher = Buffer.from(await webcrypto.subtle.encrypt(algorithm, key, plain));
    const file = {
        v: "v2",
        key: {
            kty: "oct", key_ops: ["encrypt", "decrypt"], alg: "A256CTR", k: b64url(keyBytes), ext: true,
        },
        iv: b64(iv),
        hashes: { sha256: b64(createHash("sha256").update(cipher).digest()) },
    };
    return { cipher, file };
}

async function decryptAttachment(file, cipher) {
    const problems = [];
    if (file.v !== "v2") problems.push(`v is ${JSON.stringify(file.v)}, not "v2"`);
    if (file.key?.alg !== "A256CTR") problems.push(`key.alg is ${JSON.stringify(file.key?.alg)}`);
    if (file.key?.kty !== "oct") problems.push(`key.kty is ${JSON.stringify(file.key?.kty)}`);
    if (!file.key?.key_ops?.includes("decrypt")) problems.push("key.key_ops lacks decrypt");
    if (file.key?.ext !== true) problems.push("key.ext is not true");
    const encoded = { "iv": file.iv, "hashes.sha256": file.hashes?.sha256, "key.k": file.key?.k };
    for (const [name, text] of Object.entries(encoded)) {
        if (typeof text !== "string") problems.push(`${name} missing`);
        else if (text.includes("=")) problems.push(`${name} is padded base64`);
    }
    if (file.iv && /[-_]/.test(file.iv)) problems.push("iv is base64url, not standard base64");
    if (file.key?.k && /[+/]/.test(file.key.k)) problems.push("key.k is base64, not base64url");
    const actual = b64(createHash("sha256").update(cipher).digest());
    const expected = file.hashes?.sha256 ?? null;
    const keyBytes = unb64(file.key.k);
    const key = await webcrypto.subtle.importKey("raw", keyBytes, "AES-CTR", false, ["decrypt"]);
    const algorithm = { name: "AES-CTR", counter: unb64(file.iv), length: 64 };
    const plain = Buffer.from(await webcrypto.subtle.decrypt(algorithm, key, cipher));
    return {
        plain,
        // strict: the unpadded base64 string itself must match, as the spec says
        hash_ok: expected === actual,
        hash_expected: expected,
        hash_actual: actual,
        problems,
    };
}

async function download(mxc) {
    const c = needClient();
    const { server, mediaId } = parseMxc(mxc);
    const path = [server, mediaId].map(encodeURIComponent).join("/");
    const url = `${c.baseUrl}/_matrix/client/v1/media/download/${path}`;
    const resp = await fetch(url, { headers: { Authorization: `Bearer ${c.getAccessToken()}` } });
    if (!resp.ok) throw new Error(`GET ${url}: ${resp.status} ${await resp.text()}`);
    return Buffer.from(await resp.arrayBuffer());
}

// js-sdk never encrypts a reaction (MatrixClient.shouldEncryptEventForRoom); while `send`
// runs, reactions to an encrypted room are encrypted like any other event.
let encryptingReactions = 0;
async function withEncryptedReactions(c, send) {
    if (!c.imgbotShouldEncrypt) {
        c.imgbotShouldEncrypt = c.shouldEncryptEventForRoom.bind(c);
        c.shouldEncryptEventForRoom = async (event, room) =>
            encryptingReactions > 0 && event.getType() === "m.reaction" && !event.isEncrypted()
                ? c.getCrypto().isEncryptionEnabledInRoom(room.roomId)
                : c.imgbotShouldEncrypt(event, room);
    }
    encryptingReactions += 1;
    try {
        return await send();
    } finally {
        encryptingReactions -= 1;
    }
}

// ---------------------------------------------------------------- commands

const commands = {
    async login({
        homeserver, user, password: pw, bootstrap_cross_signing = true, isolation = "only_signed",
        device_name = "imgbot e2e test client", timeout = 60,
    }) {
        if (client || password) throw new Error("already logged in");
        const anonymous = sdk.createClient({ baseUrl: homeserver });
        const creds = await anonymous.loginRequest({
            type: "m.login.password",
            identifier: { type: "m.id.user", user },
            password: pw,
            initial_device_display_name: device_name,
        });
        password = pw;
        const c = sdk.createClient({
            baseUrl: homeserver,
            userId: creds.user_id,
            deviceId: creds.device_id,
            accessToken: creds.access_token,
            pendingEventOrdering: PendingEventOrdering.Detached, // no local echoes in the timeline
        });
        await c.initRustCrypto({ useIndexedDB: false });
        try { // js-sdk turns Rust's tracing on at debug level
            const { Tracing, LoggerLevel } = RustSdkCryptoJs;
            new Tracing(DEBUG ? LoggerLevel.Debug : LoggerLevel.Warn).turnOn();
        } catch {
            // only a quieter log
        }
        const crypto = c.getCrypto();
        crypto.globalBlacklistUnverifiedDevices = false;
        if (!["all", "only_signed"].includes(isolation)) throw new Error(`isolation ${isolation}?`);
        crypto.setDeviceIsolationMode(
            isolation === "all" ? new AllDevicesIsolationMode(false) : new OnlySignedDevicesIsolationMode(),
        );
        c.on(RoomEvent.Timeline, (event, room, toStartOfTimeline) => {
            if (toStartOfTimeline || event.isState()) return;
            const id = event.getId();
            if (!id || seen.has(id)) return;
            seen.add(id);
            log.push({ index: log.length, event });
        });
        const ready = new Promise((resolve, reject) => {
            const onSync = (state) => {
                if (state === SyncState.Prepared || state === SyncState.Syncing) {
                    c.off(ClientEvent.Sync, onSync);
                    resolve();
                } else if (state === SyncState.Error) {
                    reject(new Error("initial sync failed"));
                }
            };
            c.on(ClientEvent.Sync, onSync);
        });
        await c.startClient({ initialSyncLimit: 20 });
        await withTimeout(ready, timeout, "the initial sync");
        if (bootstrap_cross_signing) {
            await crypto.bootstrapCrossSigning({
                authUploadDeviceSigningKeys: async (makeRequest) => {
                    await makeRequest({
                        type: "m.login.password",
                        identifier: { type: "m.id.user", user: creds.user_id },
                        password,
                    });
                },
            });
        }
        // Our device keys (and, cross-signed, the self-signing key's signature on them) must
        // be on the server before anyone can share room keys with us: ask the server itself.
        const onServer = await waitFor("own device keys on the server", timeout, async () => {
            const res = await c.downloadKeysForUsers([creds.user_id]);
            const device = res.device_keys?.[creds.user_id]?.[creds.device_id];
            if (!device) return null;
            const ssk = Object.keys(res.self_signing_keys?.[creds.user_id]?.keys ?? {})[0];
            const signed = Boolean(ssk && device.signatures?.[creds.user_id]?.[ssk]);
            return bootstrap_cross_signing && !signed ? null : { signed };
        });
        const status = await crypto.getDeviceVerificationStatus(creds.user_id, creds.device_id);
        client = c; // only now do the other commands get to use it
        return {
            user_id: creds.user_id,
            device_id: creds.device_id,
            access_token: creds.access_token,
            cross_signed: onServer.signed && Boolean(status?.signedByOwner),
        };
    },

    async create_room({ invite = [], name = null, encrypted = true, wait_join = true, timeout = 30 }) {
        const c = needClient();
        const encryption = { algorithm: "m.megolm.v1.aes-sha2" };
        const request = {
            preset: "private_chat",
            invite,
            initial_state: encrypted
                ? [{ type: "m.room.encryption", state_key: "", content: encryption }]
                : [],
            ...(name ? { name } : {}),
        };
        const { room_id } = await c.createRoom(request);
        await waitFor(`${room_id} to sync`, timeout, async () =>
            membership(room_id, c.getUserId()) === "join" &&
            (!encrypted || (await roomIsEncrypted(room_id))));
        if (wait_join) {
            for (const userId of invite) {
                await waitFor(`${userId} to join ${room_id}`, timeout, () =>
                    membership(room_id, userId) === "join");
            }
        }
        return { room_id };
    },

    // Wait for an invite (to room_id, or to any room) and join.
    async join({ room_id = null, timeout = 30 }) {
        const c = needClient();
        const room = await waitFor(`an invite to ${room_id ?? "a room"}`, timeout, () =>
            c.getRooms().find((r) =>
                room_id ? r.roomId === room_id && ["invite", "join"].includes(r.getMyMembership())
                        : r.getMyMembership() === "invite"));
        if (room.getMyMembership() !== "join") await c.joinRoom(room.roomId);
        // joined, and the encryption state (if any) handed to the crypto layer
        await waitFor(`${room.roomId} to sync as joined`, timeout, async () =>
            membership(room.roomId, c.getUserId()) === "join" &&
            (!c.getRoom(room.roomId).hasEncryptionStateEvent() || (await roomIsEncrypted(room.roomId))));
        return { room_id: room.roomId, encrypted: await roomIsEncrypted(room.roomId) };
    },

    async wait_member({ room_id, user_id, membership: wanted = "join", timeout = 30 }) {
        await waitFor(`${user_id} to be ${wanted} in ${room_id}`, timeout, () =>
            membership(room_id, user_id) === wanted);
        return {};
    },

    async send_text({ room_id, body, msgtype = "m.text", reply_to = null, formatted_body = null }) {
        await assertEncrypted(room_id);
        const content = { msgtype, body };
        if (formatted_body) Object.assign(content, { format: "org.matrix.custom.html", formatted_body });
        if (reply_to) content["m.relates_to"] = { "m.in_reply_to": { event_id: reply_to } };
        const { event_id } = await needClient().sendEvent(room_id, "m.room.message", content);
        return { event_id };
    },

    async send_image({ room_id, path, mimetype = "image/png", body = null, reply_to = null, info = {} }) {
        const c = needClient();
        await assertEncrypted(room_id);
        const plain = await readFile(path);
        const { cipher, file } = await encryptAttachment(plain);
        const upload = { type: "application/octet-stream", includeFilename: false };
        const { content_uri } = await c.uploadContent(cipher, upload);
        file.url = content_uri;
        file.mimetype = mimetype;
        const content = {
            msgtype: "m.image",
            body: body ?? path.split("/").pop(),
            info: { mimetype, size: plain.length, ...(pngSize(plain) ?? {}), ...info },
            file,
        };
        if (reply_to) content["m.relates_to"] = { "m.in_reply_to": { event_id: reply_to } };
        const { event_id } = await c.sendEvent(room_id, "m.room.message", content);
        return { event_id, url: content_uri };
    },

    // A reaction (m.annotation) on event_id. js-sdk sends reactions in the clear, also in an
    // encrypted room, as Element does (the relation is in the clear anyway); with
    // `encrypted` it is sent encrypted instead, as some other clients do.
    async send_reaction({ room_id, event_id, key, encrypted = false }) {
        const c = needClient();
        const content = { "m.relates_to": { rel_type: "m.annotation", event_id, key } };
        if (encrypted) await assertEncrypted(room_id);
        const sent = encrypted
            ? await withEncryptedReactions(c, () => c.sendEvent(room_id, "m.reaction", content))
            : await c.sendEvent(room_id, "m.reaction", content);
        return { event_id: sent.event_id };
    },

    // The keys `sender` reacted with on event_id, in the order seen (taken back ones left out).
    async reactions({ room_id, event_id, sender = null }) {
        const keys = [];
        for (const { event } of log) {
            if (event.getRoomId() !== room_id || event.getType() !== "m.reaction") continue;
            if (event.isRedacted() || (sender && event.getSender() !== sender)) continue;
            const relation = event.getRelation();
            if (relation?.rel_type === "m.annotation" && relation.event_id === event_id) {
                keys.push(relation.key);
            }
        }
        return { keys };
    },

    // Events seen so far, from `since` (an index) on, matching the filters; no waiting.
    async events({ room_id = null, sender = null, types = null, since = 0 }) {
        const out = [];
        for (const { index, event } of log.slice(since)) {
            if (matches(event, { roomId: room_id, sender, types })) {
                out.push(await describe(index, event));
            }
        }
        return { events: out, next: log.length };
    },

    // The first `count` matching events from `since` on, once each is settled (decrypted, or
    // failed for good). On timeout: those that arrived, unsettled or not, with timed_out.
    async wait_events({
        room_id = null, sender = null, types = null, count = 1, since = 0, timeout = 30,
    }) {
        const filters = { roomId: room_id, sender, types };
        const deadline = Date.now() + timeout * 1000;
        for (;;) {
            const picked = log.slice(since).filter((e) => matches(e.event, filters)).slice(0, count);
            const described = [];
            for (const { index, event } of picked) described.push(await describe(index, event));
            // an event may have been decrypted in between, revealing a type we do not want
            const wanted = described.filter(
                (e) => !types?.length || !e.decrypted || types.includes(e.type));
            const done = wanted.length === described.length && wanted.length >= count &&
                wanted.every((e) => e.settled);
            if (done || Date.now() >= deadline) return { events: wanted, timed_out: !done };
            await sleep(100);
        }
    },

    async download_attachment({ file, path }) {
        const cipher = await download(file.url);
        const { plain, ...check } = await decryptAttachment(file, cipher);
        await writeFile(path, plain);
        return { path, size: plain.length, ...check };
    },

    async device_status({ user_id, device_id = null, timeout = 10 }) {
        const c = needClient();
        const crypto = c.getCrypto();
        // Track the user in the OlmMachine (getUserDeviceInfo(…, true) alone only does a raw
        // query for untracked users), then mark everyone dirty so the next /keys/query is fresh.
        // (olmMachine and outgoingRequestsManager are js-sdk internals)
        const refresh = async () => {
            await crypto.olmMachine.updateTrackedUsers([new RustSdkCryptoJs.UserId(user_id)]);
            await crypto.markAllTrackedUsersAsDirty();
            await crypto.outgoingRequestsManager.doProcessOutgoingRequests();
        };
        await withTimeout(refresh(), timeout, `a /keys/query for ${user_id}`);
        const devices = (await crypto.getUserDeviceInfo([user_id], true)).get(user_id) ?? new Map();
        const user = await crypto.getUserVerificationStatus(user_id);
        const result = {
            user_id,
            devices: [...devices.keys()],
            has_cross_signing: await crypto.userHasCrossSigningKeys(user_id, true),
            user_cross_signing_verified: user.isCrossSigningVerified(),
            user_was_cross_signing_verified: user.wasCrossSigningVerified(),
        };
        if (device_id) {
            const status = await crypto.getDeviceVerificationStatus(user_id, device_id);
            Object.assign(result, {
                device_id,
                device_known: status !== null,
                signed_by_owner: Boolean(status?.signedByOwner),
                cross_signing_verified: Boolean(status?.crossSigningVerified),
                locally_verified: Boolean(status?.localVerified),
            });
        }
        return result;
    },

    async whoami() {
        const c = needClient();
        return { user_id: c.getUserId(), device_id: c.getDeviceId() };
    },

    async stop() {
        if (client) {
            client.stopClient();
            client = null;
        }
        setTimeout(() => process.exit(0), 50);
        return {};
    },
};

// ---------------------------------------------------------------- the line protocol

function answer(message) {
    process.stdout.write(JSON.stringify(message) + "\n");
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on("line", async (line) => {
    if (!line.trim()) return;
    let request;
    try {
        request = JSON.parse(line);
    } catch (e) {
        answer({ id: null, ok: false, error: `bad JSON: ${e.message}` });
        return;
    }
    const { id, cmd, args = {} } = request;
    const handler = commands[cmd];
    if (!handler) {
        answer({ id, ok: false, error: `unknown command ${JSON.stringify(cmd)}` });
        return;
    }
    try {
        answer({ id, ok: true, result: (await handler(args)) ?? {} });
    } catch (e) {
        toStderr(`command ${cmd} failed:`, e);
        const data = e?.data ? " " + JSON.stringify(e.data) : "";
        answer({ id, ok: false, error: `${e?.name ?? "Error"}: ${e?.message ?? e}${data}` });
    }
});
lines.on("close", () => {
    // stdin closed: the test process is gone or done with us
    client?.stopClient();
    process.exit(0);
});
answer({ id: 0, ok: true, result: { ready: true } });
