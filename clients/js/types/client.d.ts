/** @typedef {'connecting' | 'open' | 'reconnecting' | 'degraded' | 'closed'} ConnectionState */
/** @typedef {'websocket' | 'sse' | 'poll'} TransportName */
/**
 * @typedef {object} Envelope an event as the hub delivers it
 * @property {number} id
 * @property {string} topic
 * @property {Record<string, string>} scope
 * @property {string} [key]
 * @property {number} [seq]
 * @property {string} ts
 * @property {number} v
 * @property {string} [correlation_id]
 * @property {Record<string, unknown>} payload
 */
/**
 * @typedef {object} ResetInfo the hub's word that events this subscription waited for are gone: reload state
 * @property {string} reason
 * @property {number} earliest_id
 * @property {number} head
 */
/**
 * @typedef {object} SubscribeOptions
 * @property {Record<string, string>} [filter] scope key → value
 * @property {number} [since] resume point: every retained event after it, then live (default: live from now)
 * @property {number} [tail] start on the last `tail` events (1-1000) the subscription may see, then live (not with
 * `since`); after a drop it resumes from the last event it got, like any subscription
 * @property {(info: ResetInfo) => void} [onReset] events were lost or are no longer retained: reload the state
 * @property {() => void} [onLive] replay is over
 * @property {boolean} [presence] also watch who is present on the subscription's exact topics that keep presence
 * (a topic policy with `presence = true`): `onPresence` with the members, then `onJoin` and `onLeave` (WebSocket
 * and SSE; on long-poll, `onPresence` once per request loop, from `GET /api/presence`)
 * @property {(members: PresenceMember[], topic: string) => void} [onPresence] who is present when watching starts
 * (again after each reconnect)
 * @property {(member: PresenceMember, topic: string) => void} [onJoin] a subject's first connection arrived
 * @property {(member: PresenceMember, topic: string) => void} [onLeave] a subject's last connection went
 */
/**
 * @typedef {object} PresenceMember a token subject present on a topic
 * @property {string} subject
 * @property {number} [connections] how many connections it has there (in `presence()` answers)
 * @property {Record<string, unknown>} [info] its token's `info` claim, redacted
 */
/**
 * @typedef {object} PresenceAnswer who is on a topic, across every hub (`GET /api/presence`)
 * @property {string} topic
 * @property {PresenceMember[]} members
 * @property {number} anonymous connections without a subject
 * @property {string[]} hubs the hubs that answered
 * @property {string[]} missing the hubs alive that did not answer in time
 */
/**
 * @typedef {object} HubClientOptions
 * @property {string} url the hub's base URL (`https://realtime.example.com`)
 * @property {() => (string | undefined | Promise<string | undefined>)} [getToken] a fresh token: called for each
 * connection and each SSE or long-poll request, and ahead of the token's expiry on an open WebSocket, whose token
 * is then renewed in place (`refresh`) without reconnecting
 * @property {TransportName[]} [transports] in order of preference (default: websocket, sse, poll)
 * @property {number} [fallbackAfter] failed connections in a row before the next transport (default 2)
 * @property {import('./backoff.js').BackoffOptions} [backoff]
 * @property {import('./backoff.js').BackoffOptions | false} [returnProbe] while a fallback carries the events, how
 * often WebSocket is tried again (default: initialMs 5000, maxMs 300000); `false` stays on the fallback
 * @property {number} [pollWaitSeconds] long-poll wait (default 25)
 * @property {typeof globalThis.WebSocket} [WebSocket] a WebSocket implementation (default: the global one)
 * @property {typeof globalThis.fetch} [fetch] a fetch implementation (default: the global one)
 */
/**
 * @typedef {object} Subscription
 * @property {string} name
 * @property {string[]} topics
 * @property {Record<string, string>} filter
 * @property {Cursor} cursor
 * @property {(data: Record<string, unknown>, event: Envelope) => void} handler
 * @property {SubscribeOptions} options
 * @property {AbortController | undefined} stream the SSE or long-poll loop serving it, when one does
 */
export class HubClient {
    /** @param {HubClientOptions} options */
    constructor(options: HubClientOptions);
    url: string;
    options: HubClientOptions;
    transports: TransportName[];
    /** @type {ConnectionState} */
    state: ConnectionState;
    /** @private @type {Map<string, Subscription>} */
    private subscriptions;
    /** @private @type {Map<string, Set<Function>>} */
    private listeners;
    /** @private */
    private transportIndex;
    /** @private */
    private failures;
    /** @private */
    private attempt;
    /** @private @type {WebSocket | undefined} */
    private socket;
    /** @private */
    private nextName;
    /** @private */
    private closed;
    /** @private @type {ReturnType<typeof setTimeout> | undefined} */
    private timer;
    /** @private probes of WebSocket made since the fallback began */
    private probeAttempt;
    /** @private @type {ReturnType<typeof setTimeout> | undefined} */
    private probeTimer;
    /** @private @type {ReturnType<typeof setTimeout> | undefined} renews the WebSocket's token before it expires */
    private refreshTimer;
    /** The transport in use. @returns {TransportName} */
    get transport(): TransportName;
    /**
     * Listens for `state` (ConnectionState), `reset` ({sub, info}), `error` (an Error or the hub's error frame),
     * `refreshed` ({expiresAt}: the open WebSocket now runs on a new token), `revoked` ({code, reason}: an
     * operator revoked the token's subject or id; the client has stopped and will not reconnect), and for
     * subscriptions with `presence`: `presence` ({sub, topic, members}), `join` and `leave` ({sub, topic, member}).
     * @param {'state' | 'reset' | 'error' | 'refreshed' | 'revoked' | 'presence' | 'join' | 'leave'} event
     * @param {Function} listener
     * @returns {() => void} stops listening
     */
    on(event: "state" | "reset" | "error" | "refreshed" | "revoked" | "presence" | "join" | "leave", listener: Function): () => void;
    /**
     * Subscribes to a topic pattern (`chat:*`, `run.*`, `*`, or an exact topic); `handler(data, event)` gets each
     * event's payload and envelope once, in id order.
     * @param {string | string[]} patterns
     * @param {(data: Record<string, unknown>, event: Envelope) => void} handler
     * @param {SubscribeOptions} [options]
     * @returns {() => void} unsubscribes
     */
    subscribe(patterns: string | string[], handler: (data: Record<string, unknown>, event: Envelope) => void, options?: SubscribeOptions): () => void;
    /**
     * Subscribes to exactly one topic (a `*` in it is not a wildcard here: such topics cannot exist).
     * @param {string} topic
     * @param {(data: Record<string, unknown>, event: Envelope) => void} handler
     * @param {SubscribeOptions} [options]
     */
    subscribeExact(topic: string, handler: (data: Record<string, unknown>, event: Envelope) => void, options?: SubscribeOptions): () => void;
    /**
     * Publishes one event (the token needs a `publish` claim for the topic); resolves to its id once durable.
     * @param {string} topic
     * @param {Record<string, unknown>} data the payload: a JSON object
     * @param {{scope?: Record<string, string>, key?: string, seq?: number, correlationId?: string}} [extra]
     * @returns {Promise<number>}
     */
    publish(topic: string, data: Record<string, unknown>, extra?: {
        scope?: Record<string, string>;
        key?: string;
        seq?: number;
        correlationId?: string;
    }): Promise<number>;
    /**
     * Who is present on `topic` (a topic whose policy keeps presence), across every hub of the cluster.
     * @param {string} topic
     * @param {Record<string, string>} [filter] scope keys, as the token's grant asks for the topic
     * @returns {Promise<PresenceAnswer>}
     */
    presence(topic: string, filter?: Record<string, string>): Promise<PresenceAnswer>;
    /** Closes every connection; no reconnect follows. */
    close(): void;
    /** @private @param {string} name */
    private unsubscribe;
    /** @private @param {ConnectionState} state */
    private setState;
    /** @private @param {string} event @param {unknown} value */
    private emit;
    /** @private @returns {Promise<Record<string, string>>} */
    private authHeaders;
    /** @private @param {string} path @param {RequestInit} [init] */
    private fetchHub;
    /** @private Opens the current transport (WebSocket: one connection; SSE and long-poll: one loop a subscription). */
    private connect;
    /** @private @param {Subscription} subscription */
    private start;
    /**
     * @private A failed or lost WebSocket: back off and connect again (maybe with the next transport), as its close
     * code says: 4001 (token expired or invalid) at once with a new token; 4003 (revoked) not at all; 4029 (too many
     * connections) after at least 30 s; anything else (4002 an operator's disconnect, 4008 too slow, 1012 a restart,
     * a network drop) with backoff, resuming every subscription from its cursor.
     * @param {boolean} connected whether the connection had opened
     * @param {number} [code] the close code
     * @param {string} [reason] the close reason
     */
    private scheduleReconnect;
    /** @private The token was revoked: stop for good and say so. @param {number} code @param {string} [reason] */
    private stopRevoked;
    /**
     * @private Renews the open WebSocket's token ahead of its expiry (`expiresAt`, Unix seconds): a third of the time
     * left before it, at most 30 s and at least 1 s before, a fresh token from `getToken` goes out as `refresh`; the
     * hub answers `refreshed` with the new expiry, and the next renewal is planned from that.
     * @param {WebSocket} socket
     * @param {number | undefined} expiresAt
     */
    private scheduleRefresh;
    /**
     * @private The one fallback rule, for every transport. A connection that cannot open while the hub answers plain
     * HTTP is blocked on the way (a proxy): after `fallbackAfter` such failures in a row the next transport is tried.
     * A hub that is down altogether is only waited for, never a reason to fall back.
     * @param {boolean} connected whether the connection had opened
     */
    private countFailure;
    /**
     * @private While a fallback carries the events, try WebSocket again after a growing delay: a proxy that blocked
     * it for a minute must not cost every page long-poll for the rest of the day.
     */
    private scheduleProbe;
    /** @private A WebSocket of its own, beside the fallback: adopted once the hub's welcome comes through it. */
    private probeWebSocket;
    /**
     * @private WebSocket works again: stop every fallback stream and resubscribe on `socket` from each cursor. The
     * cursors are shared, so what the fallback applied is not applied again and nothing after it is skipped.
     * @param {WebSocket} socket
     */
    private returnToWebSocket;
    /** @private Whether the hub answers plain HTTP now. @returns {Promise<boolean>} */
    private hubAnswers;
    /** @private */
    private connectSocket;
    /**
     * @private A new WebSocket to the hub with a fresh token, or `undefined` when the runtime has none.
     * @returns {Promise<WebSocket | undefined>}
     */
    private openSocket;
    /**
     * @private Makes `socket` the connection every subscription runs on.
     * @param {WebSocket} socket
     * @param {boolean} open whether it is open already (a probe that got through)
     */
    private adoptSocket;
    /** @private @param {Subscription} subscription */
    private sendSubscribe;
    /** @private @param {any} frame @param {WebSocket} [socket] the connection it came on */
    private onFrame;
    /**
     * @private Who is present, or who joined or left, for a subscription that watches presence.
     * @param {Subscription} subscription
     * @param {{type: 'presence' | 'join' | 'leave', topic: string, members?: PresenceMember[], member?: PresenceMember}} frame
     */
    private onPresenceFrame;
    /** @private @param {Subscription} subscription @param {Envelope & Record<string, unknown>} event */
    private apply;
    /** @private @param {Subscription} subscription @param {ResetInfo} info @param {number} position */
    private reset;
    /**
     * @private The position a live-only subscription starts from on SSE and long-poll: the log's head now.
     * @param {Subscription} subscription
     */
    private ensurePosition;
    /** @private @param {Subscription} subscription @param {Record<string, string | number>} extra */
    private query;
    /**
     * @private Server-Sent Events over fetch (so the token travels in a header), one stream per subscription.
     * @param {Subscription} subscription
     */
    private runSse;
    /** @private @param {Subscription} subscription @param {string} block */
    private onSseBlock;
    /**
     * @private Long-poll, one loop per subscription.
     * @param {Subscription} subscription
     */
    private runPoll;
    /**
     * @private A subscription's SSE or long-poll loop ended: start it again after a backoff (or fall back).
     * @param {Subscription} subscription
     * @param {boolean} connected whether the stream had opened
     */
    private scheduleLoopRestart;
}
/** An error answer of the hub (`{"error":{"code","message"}}`). */
export class HubError extends Error {
    /** @param {number} status @param {string | undefined} code @param {string | undefined} message */
    constructor(status: number, code: string | undefined, message: string | undefined);
    status: number;
    code: string | undefined;
}
export type ConnectionState = "connecting" | "open" | "reconnecting" | "degraded" | "closed";
export type TransportName = "websocket" | "sse" | "poll";
/**
 * an event as the hub delivers it
 */
export type Envelope = {
    id: number;
    topic: string;
    scope: Record<string, string>;
    key?: string | undefined;
    seq?: number | undefined;
    ts: string;
    v: number;
    correlation_id?: string | undefined;
    payload: Record<string, unknown>;
};
/**
 * the hub's word that events this subscription waited for are gone: reload state
 */
export type ResetInfo = {
    reason: string;
    earliest_id: number;
    head: number;
};
export type SubscribeOptions = {
    /**
     * scope key → value
     */
    filter?: Record<string, string> | undefined;
    /**
     * resume point: every retained event after it, then live (default: live from now)
     */
    since?: number | undefined;
    /**
     * start on the last `tail` events (1-1000) the subscription may see, then live (not with
     * `since`); after a drop it resumes from the last event it got, like any subscription
     */
    tail?: number | undefined;
    /**
     * events were lost or are no longer retained: reload the state
     */
    onReset?: ((info: ResetInfo) => void) | undefined;
    /**
     * replay is over
     */
    onLive?: (() => void) | undefined;
    /**
     * also watch who is present on the subscription's exact topics that keep presence
     * (a topic policy with `presence = true`): `onPresence` with the members, then `onJoin` and `onLeave` (WebSocket
     * and SSE; on long-poll, `onPresence` once per request loop, from `GET /api/presence`)
     */
    presence?: boolean | undefined;
    /**
     * who is present when watching starts
     * (again after each reconnect)
     */
    onPresence?: ((members: PresenceMember[], topic: string) => void) | undefined;
    /**
     * a subject's first connection arrived
     */
    onJoin?: ((member: PresenceMember, topic: string) => void) | undefined;
    /**
     * a subject's last connection went
     */
    onLeave?: ((member: PresenceMember, topic: string) => void) | undefined;
};
/**
 * a token subject present on a topic
 */
export type PresenceMember = {
    subject: string;
    /**
     * how many connections it has there (in `presence()` answers)
     */
    connections?: number | undefined;
    /**
     * its token's `info` claim, redacted
     */
    info?: Record<string, unknown> | undefined;
};
/**
 * who is on a topic, across every hub (`GET /api/presence`)
 */
export type PresenceAnswer = {
    topic: string;
    members: PresenceMember[];
    /**
     * connections without a subject
     */
    anonymous: number;
    /**
     * the hubs that answered
     */
    hubs: string[];
    /**
     * the hubs alive that did not answer in time
     */
    missing: string[];
};
export type HubClientOptions = {
    /**
     * the hub's base URL (`https://realtime.example.com`)
     */
    url: string;
    /**
     * a fresh token: called for each
     * connection and each SSE or long-poll request, and ahead of the token's expiry on an open WebSocket, whose token
     * is then renewed in place (`refresh`) without reconnecting
     */
    getToken?: (() => (string | undefined | Promise<string | undefined>)) | undefined;
    /**
     * in order of preference (default: websocket, sse, poll)
     */
    transports?: TransportName[] | undefined;
    /**
     * failed connections in a row before the next transport (default 2)
     */
    fallbackAfter?: number | undefined;
    backoff?: import("./backoff.js").BackoffOptions | undefined;
    /**
     * while a fallback carries the events, how
     * often WebSocket is tried again (default: initialMs 5000, maxMs 300000); `false` stays on the fallback
     */
    returnProbe?: false | import("./backoff.js").BackoffOptions | undefined;
    /**
     * long-poll wait (default 25)
     */
    pollWaitSeconds?: number | undefined;
    /**
     * a WebSocket implementation (default: the global one)
     */
    WebSocket?: {
        new (url: string | URL, protocols?: string | string[]): WebSocket;
        prototype: WebSocket;
        readonly CONNECTING: 0;
        readonly OPEN: 1;
        readonly CLOSING: 2;
        readonly CLOSED: 3;
    } | undefined;
    /**
     * a fetch implementation (default: the global one)
     */
    fetch?: typeof fetch | undefined;
};
export type Subscription = {
    name: string;
    topics: string[];
    filter: Record<string, string>;
    cursor: Cursor;
    handler: (data: Record<string, unknown>, event: Envelope) => void;
    options: SubscribeOptions;
    /**
     * the SSE or long-poll loop serving it, when one does
     */
    stream: AbortController | undefined;
};
import { Cursor } from './cursor.js';
