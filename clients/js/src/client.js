// The hub's client: one transport manager for every subscription (WebSocket first, then SSE, then long-poll, and
// back to WebSocket once it works again), reconnects with exponential backoff and full jitter, resumes each
// subscription from its last id, drops what it has already applied, and tells the application about resets and
// connection states. Browsers and Node 20+
// (global fetch; global WebSocket from Node 22, or `node --experimental-websocket`, or the `WebSocket` option).

import { backoffDelay } from './backoff.js';
import { Cursor } from './cursor.js';

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
  constructor(options) {
    this.url = options.url.replace(/\/+$/, '');
    this.options = options;
    this.transports = options.transports ?? ['websocket', 'sse', 'poll'];
    /** @type {ConnectionState} */
    this.state = 'connecting';
    /** @private @type {Map<string, Subscription>} */
    this.subscriptions = new Map();
    /** @private @type {Map<string, Set<Function>>} */
    this.listeners = new Map();
    /** @private */
    this.transportIndex = 0;
    /** @private */
    this.failures = 0;
    /** @private */
    this.attempt = 0;
    /** @private @type {WebSocket | undefined} */
    this.socket = undefined;
    /** @private */
    this.nextName = 1;
    /** @private */
    this.closed = false;
    /** @private @type {ReturnType<typeof setTimeout> | undefined} */
    this.timer = undefined;
    /** @private probes of WebSocket made since the fallback began */
    this.probeAttempt = 0;
    /** @private @type {ReturnType<typeof setTimeout> | undefined} */
    this.probeTimer = undefined;
    /** @private @type {ReturnType<typeof setTimeout> | undefined} renews the WebSocket's token before it expires */
    this.refreshTimer = undefined;
    this.connect();
  }

  /** The transport in use. @returns {TransportName} */
  get transport() {
    return this.transports[this.transportIndex];
  }

  /**
   * Listens for `state` (ConnectionState), `reset` ({sub, info}), `error` (an Error or the hub's error frame),
   * `refreshed` ({expiresAt}: the open WebSocket now runs on a new token), `revoked` ({code, reason}: an
   * operator revoked the token's subject or id; the client has stopped and will not reconnect), and for
   * subscriptions with `presence`: `presence` ({sub, topic, members}), `join` and `leave` ({sub, topic, member}).
   * @param {'state' | 'reset' | 'error' | 'refreshed' | 'revoked' | 'presence' | 'join' | 'leave'} event
   * @param {Function} listener
   * @returns {() => void} stops listening
   */
  on(event, listener) {
    const set = this.listeners.get(event) ?? new Set();
    set.add(listener);
    this.listeners.set(event, set);
    return () => set.delete(listener);
  }

  /**
   * Subscribes to a topic pattern (`chat:*`, `run.*`, `*`, or an exact topic); `handler(data, event)` gets each
   * event's payload and envelope once, in id order.
   * @param {string | string[]} patterns
   * @param {(data: Record<string, unknown>, event: Envelope) => void} handler
   * @param {SubscribeOptions} [options]
   * @returns {() => void} unsubscribes
   */
  subscribe(patterns, handler, options = {}) {
    if (options.tail !== undefined && options.since !== undefined) throw new TypeError('give tail or since, not both');
    const name = `s${this.nextName++}`;
    /** @type {Subscription} */
    const subscription = {
      name,
      topics: Array.isArray(patterns) ? patterns : [patterns],
      filter: options.filter ?? {},
      cursor: new Cursor(options.since),
      handler,
      options,
      stream: undefined,
    };
    this.subscriptions.set(name, subscription);
    this.start(subscription);
    return () => this.unsubscribe(name);
  }

  /**
   * Subscribes to exactly one topic (a `*` in it is not a wildcard here: such topics cannot exist).
   * @param {string} topic
   * @param {(data: Record<string, unknown>, event: Envelope) => void} handler
   * @param {SubscribeOptions} [options]
   */
  subscribeExact(topic, handler, options = {}) {
    if (topic.endsWith('*')) throw new TypeError(`not an exact topic: ${topic}`);
    return this.subscribe(topic, handler, options);
  }

  /**
   * Publishes one event (the token needs a `publish` claim for the topic); resolves to its id once durable.
   * @param {string} topic
   * @param {Record<string, unknown>} data the payload: a JSON object
   * @param {{scope?: Record<string, string>, key?: string, seq?: number, correlationId?: string}} [extra]
   * @returns {Promise<number>}
   */
  async publish(topic, data, extra = {}) {
    if (data === null || typeof data !== 'object' || Array.isArray(data)) {
      throw new TypeError('the payload must be a JSON object');
    }
    const body = { topic, payload: data, scope: extra.scope ?? {} };
    if (extra.key !== undefined) Object.assign(body, { key: extra.key });
    if (extra.seq !== undefined) Object.assign(body, { seq: extra.seq });
    if (extra.correlationId !== undefined) Object.assign(body, { correlation_id: extra.correlationId });
    const response = await this.fetchHub('/api/publish', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const answer = await response.json();
    if (!response.ok) throw new HubError(response.status, answer?.error?.code, answer?.error?.message);
    return answer.ids[0];
  }

  /**
   * Who is present on `topic` (a topic whose policy keeps presence), across every hub of the cluster.
   * @param {string} topic
   * @param {Record<string, string>} [filter] scope keys, as the token's grant asks for the topic
   * @returns {Promise<PresenceAnswer>}
   */
  async presence(topic, filter = {}) {
    const response = await this.fetchHub(`/api/presence?${new URLSearchParams({ ...filter, topic })}`);
    const answer = await response.json();
    if (!response.ok) throw new HubError(response.status, answer?.error?.code, answer?.error?.message);
    return answer;
  }

  /** Closes every connection; no reconnect follows. */
  close() {
    this.closed = true;
    clearTimeout(this.timer);
    clearTimeout(this.probeTimer);
    clearTimeout(this.refreshTimer);
    for (const subscription of this.subscriptions.values()) subscription.stream?.abort();
    this.socket?.close(1000);
    this.setState('closed');
  }

  /** @private @param {string} name */
  unsubscribe(name) {
    const subscription = this.subscriptions.get(name);
    if (!subscription) return;
    this.subscriptions.delete(name);
    subscription.stream?.abort();
    if (this.socket?.readyState === 1) this.socket.send(JSON.stringify({ op: 'unsubscribe', sub: name }));
  }

  /** @private @param {ConnectionState} state */
  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit('state', state);
  }

  /** @private @param {string} event @param {unknown} value */
  emit(event, value) {
    for (const listener of this.listeners.get(event) ?? []) listener(value);
  }

  /** @private @returns {Promise<Record<string, string>>} */
  async authHeaders() {
    const token = await this.options.getToken?.();
    return token ? { authorization: `Bearer ${token}` } : {};
  }

  /** @private @param {string} path @param {RequestInit} [init] */
  async fetchHub(path, init = {}) {
    const fetchImpl = this.options.fetch ?? globalThis.fetch;
    const headers = { ...(init.headers ?? {}), ...(await this.authHeaders()) };
    return fetchImpl(`${this.url}${path}`, { ...init, headers });
  }

  /** @private Opens the current transport (WebSocket: one connection; SSE and long-poll: one loop a subscription). */
  connect() {
    if (this.closed) return;
    if (this.transport === 'websocket') {
      this.connectSocket();
    } else {
      for (const subscription of this.subscriptions.values()) this.start(subscription);
      this.setState('degraded');
    }
  }

  /** @private @param {Subscription} subscription */
  start(subscription) {
    if (this.closed) return;
    if (this.transport === 'websocket') {
      if (this.socket?.readyState === 1) this.sendSubscribe(subscription);
      return;
    }
    subscription.stream?.abort();
    subscription.stream = new AbortController();
    const loop = this.transport === 'sse' ? this.runSse(subscription) : this.runPoll(subscription);
    loop.catch((error) => this.emit('error', error));
  }

  /**
   * @private A failed or lost WebSocket: back off and connect again (maybe with the next transport), as its close
   * code says: 4001 (token expired or invalid) at once with a new token; 4003 (revoked) not at all; 4029 (too many
   * connections) after at least 30 s; anything else (4002 an operator's disconnect, 4008 too slow, 1012 a restart,
   * a network drop) with backoff, resuming every subscription from its cursor.
   * @param {boolean} connected whether the connection had opened
   * @param {number} [code] the close code
   * @param {string} [reason] the close reason
   */
  async scheduleReconnect(connected, code, reason) {
    if (this.closed) return;
    clearTimeout(this.refreshTimer);
    if (code === 4003) return this.stopRevoked(code, reason);
    this.setState('reconnecting');
    await this.countFailure(connected || code === 4001);
    let delay = code === 4001 ? 0 : backoffDelay(this.attempt++, this.options.backoff);
    if (code === 4029) delay = Math.max(delay, 30000);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** @private The token was revoked: stop for good and say so. @param {number} code @param {string} [reason] */
  stopRevoked(code, reason) {
    this.close();
    this.emit('revoked', { code, reason: reason ?? 'token revoked' });
  }

  /**
   * @private Renews the open WebSocket's token ahead of its expiry (`expiresAt`, Unix seconds): a third of the time
   * left before it, at most 30 s and at least 1 s before, a fresh token from `getToken` goes out as `refresh`; the
   * hub answers `refreshed` with the new expiry, and the next renewal is planned from that.
   * @param {WebSocket} socket
   * @param {number | undefined} expiresAt
   */
  scheduleRefresh(socket, expiresAt) {
    clearTimeout(this.refreshTimer);
    if (expiresAt === undefined || expiresAt === null || !this.options.getToken) return;
    const left = expiresAt * 1000 - Date.now();
    const lead = Math.min(30000, Math.max(1000, left / 3));
    this.refreshTimer = setTimeout(async () => {
      if (this.closed || this.socket !== socket || socket.readyState !== 1) return;
      try {
        const token = await this.options.getToken?.();
        if (token && this.socket === socket && socket.readyState === 1) {
          socket.send(JSON.stringify({ op: 'refresh', token }));
        }
      } catch (error) {
        // No fresh token now: the hub closes with 4001 at the expiry, and the reconnect asks for one again.
        this.emit('error', error);
      }
    }, Math.max(0, left - lead));
  }

  /**
   * @private The one fallback rule, for every transport. A connection that cannot open while the hub answers plain
   * HTTP is blocked on the way (a proxy): after `fallbackAfter` such failures in a row the next transport is tried.
   * A hub that is down altogether is only waited for, never a reason to fall back.
   * @param {boolean} connected whether the connection had opened
   */
  async countFailure(connected) {
    if (connected) {
      this.failures = 0;
      return;
    }
    if (!(await this.hubAnswers())) return;
    this.failures += 1;
    if (this.failures >= (this.options.fallbackAfter ?? 2) && this.transportIndex < this.transports.length - 1) {
      this.transportIndex += 1;
      this.failures = 0;
      this.attempt = 0;
      this.scheduleProbe();
    }
  }

  /**
   * @private While a fallback carries the events, try WebSocket again after a growing delay: a proxy that blocked
   * it for a minute must not cost every page long-poll for the rest of the day.
   */
  scheduleProbe() {
    const probe = this.options.returnProbe;
    if (probe === false || this.closed || this.transportIndex === 0 || this.transports[0] !== 'websocket') return;
    clearTimeout(this.probeTimer);
    const delay = backoffDelay(this.probeAttempt++, probe ?? { initialMs: 5000, maxMs: 300000 });
    this.probeTimer = setTimeout(() => this.probeWebSocket(), delay);
  }

  /** @private A WebSocket of its own, beside the fallback: adopted once the hub's welcome comes through it. */
  async probeWebSocket() {
    if (this.closed || this.transportIndex === 0) return;
    const socket = await this.openSocket();
    if (!socket) return;
    let welcomed = false;
    socket.onmessage = (message) => {
      const frame = JSON.parse(String(message.data));
      if (welcomed || frame.type !== 'welcome') return;
      welcomed = true;
      this.returnToWebSocket(socket);
      this.scheduleRefresh(socket, frame.expires_at);
    };
    socket.onclose = () => {
      if (!welcomed) this.scheduleProbe();
    };
    socket.onerror = () => {};
  }

  /**
   * @private WebSocket works again: stop every fallback stream and resubscribe on `socket` from each cursor. The
   * cursors are shared, so what the fallback applied is not applied again and nothing after it is skipped.
   * @param {WebSocket} socket
   */
  returnToWebSocket(socket) {
    if (this.closed || this.transportIndex === 0) return socket.close(1000);
    this.transportIndex = 0;
    this.failures = 0;
    this.attempt = 0;
    this.probeAttempt = 0;
    for (const subscription of this.subscriptions.values()) {
      subscription.stream?.abort();
      subscription.stream = undefined;
    }
    this.adoptSocket(socket, true);
  }

  /** @private Whether the hub answers plain HTTP now. @returns {Promise<boolean>} */
  async hubAnswers() {
    try {
      return (await this.fetchHub('/healthz')).ok;
    } catch {
      return false;
    }
  }

  /** @private */
  async connectSocket() {
    const socket = await this.openSocket();
    if (!socket) {
      // No WebSocket in this runtime: go straight to the next transport (a probe finds none either).
      this.transportIndex += 1;
      return this.connect();
    }
    this.adoptSocket(socket, false);
  }

  /**
   * @private A new WebSocket to the hub with a fresh token, or `undefined` when the runtime has none.
   * @returns {Promise<WebSocket | undefined>}
   */
  async openSocket() {
    const WebSocketImpl = this.options.WebSocket ?? globalThis.WebSocket;
    if (!WebSocketImpl) return undefined;
    const token = await this.options.getToken?.();
    const base = this.url.replace(/^http/, 'ws');
    return new WebSocketImpl(`${base}/ws${token ? `?access_token=${encodeURIComponent(token)}` : ''}`);
  }

  /**
   * @private Makes `socket` the connection every subscription runs on.
   * @param {WebSocket} socket
   * @param {boolean} open whether it is open already (a probe that got through)
   */
  adoptSocket(socket, open) {
    this.socket = socket;
    let opened = false;
    const onOpen = () => {
      // Closed while it was connecting (a runtime may open it all the same): close it now.
      if (this.closed) return socket.close(1000);
      opened = true;
      this.attempt = 0;
      this.setState('open');
      for (const subscription of this.subscriptions.values()) this.sendSubscribe(subscription);
    };
    socket.onmessage = (message) => this.onFrame(JSON.parse(String(message.data)), socket);
    socket.onclose = (event) => {
      if (this.socket === socket) this.scheduleReconnect(opened, event?.code, event?.reason);
    };
    socket.onerror = () => {};
    if (open) onOpen();
    else socket.onopen = onOpen;
  }

  /** @private @param {Subscription} subscription */
  sendSubscribe(subscription) {
    /** @type {Record<string, unknown>} */
    const frame = { op: 'subscribe', sub: subscription.name, topics: subscription.topics, filter: subscription.filter };
    if (subscription.cursor.lastId !== undefined) frame.since = subscription.cursor.lastId;
    else if (subscription.options.tail !== undefined) frame.tail = subscription.options.tail;
    if (subscription.options.presence) frame.presence = true;
    this.socket?.send(JSON.stringify(frame));
  }

  /** @private @param {any} frame @param {WebSocket} [socket] the connection it came on */
  onFrame(frame, socket) {
    const subscription = frame.sub ? this.subscriptions.get(frame.sub) : undefined;
    switch (frame.type) {
      case 'welcome':
        if (socket) this.scheduleRefresh(socket, frame.expires_at);
        break;
      case 'refreshed':
        if (socket) this.scheduleRefresh(socket, frame.expires_at);
        this.emit('refreshed', { expiresAt: frame.expires_at });
        break;
      case 'event':
        if (subscription) this.apply(subscription, frame);
        break;
      case 'subscribed':
        // Live from now: the head at subscribe time is the position to resume from after a drop. (A tail's events,
        // all at or below that head, come first: its position is known once they have.)
        if (subscription && subscription.cursor.lastId === undefined && subscription.options.tail === undefined) {
          subscription.cursor.advanceTo(frame.head);
        }
        break;
      case 'reset':
        if (subscription) this.reset(subscription, frame, frame.earliest_id - 1);
        break;
      case 'presence':
      case 'join':
      case 'leave':
        if (subscription) this.onPresenceFrame(subscription, frame);
        break;
      case 'live':
        if (subscription && subscription.cursor.lastId === undefined) subscription.cursor.advanceTo(frame.last_id);
        subscription?.options.onLive?.();
        break;
      case 'error':
        this.emit('error', frame);
        // The log failed under the subscription and the hub removed it: subscribe again from its cursor, as the
        // frame asks, once the hub has had a moment (the hub itself waits 30 s for the log before saying so).
        if (subscription && frame.code === 'internal') {
          setTimeout(() => {
            if (this.subscriptions.get(subscription.name) === subscription && this.socket?.readyState === 1) {
              this.sendSubscribe(subscription);
            }
          }, 1000);
        }
        break;
      default:
        break;
    }
  }

  /**
   * @private Who is present, or who joined or left, for a subscription that watches presence.
   * @param {Subscription} subscription
   * @param {{type: 'presence' | 'join' | 'leave', topic: string, members?: PresenceMember[], member?: PresenceMember}} frame
   */
  onPresenceFrame(subscription, frame) {
    const { options } = subscription;
    const { topic } = frame;
    if (frame.type === 'presence') {
      const members = frame.members ?? [];
      options.onPresence?.(members, topic);
      this.emit('presence', { sub: subscription.name, topic, members });
      return;
    }
    const member = /** @type {PresenceMember} */ (frame.member);
    if (frame.type === 'join') options.onJoin?.(member, topic);
    else options.onLeave?.(member, topic);
    this.emit(frame.type, { sub: subscription.name, topic, member });
  }

  /** @private @param {Subscription} subscription @param {Envelope & Record<string, unknown>} event */
  apply(subscription, event) {
    if (!subscription.cursor.accept(event.id)) return;
    const { type: _type, sub: _sub, ...envelope } = event;
    subscription.handler(/** @type {Envelope} */ (envelope).payload, /** @type {Envelope} */ (envelope));
  }

  /** @private @param {Subscription} subscription @param {ResetInfo} info @param {number} position */
  reset(subscription, info, position) {
    const { reason, earliest_id, head } = info;
    subscription.cursor.advanceTo(position);
    subscription.options.onReset?.({ reason, earliest_id, head });
    this.emit('reset', { sub: subscription.name, info: { reason, earliest_id, head } });
  }

  /**
   * @private The position a live-only subscription starts from on SSE and long-poll: the log's head now.
   * @param {Subscription} subscription
   */
  async ensurePosition(subscription) {
    if (subscription.cursor.lastId !== undefined || subscription.options.tail !== undefined) return;
    const response = await this.fetchHub('/api/health/pubsub');
    const health = await response.json();
    subscription.cursor.advanceTo(health?.log?.head ?? 0);
  }

  /** @private @param {Subscription} subscription @param {Record<string, string | number>} extra */
  query(subscription, extra) {
    const params = new URLSearchParams({ topics: subscription.topics.join(','), ...subscription.filter });
    for (const [key, value] of Object.entries(extra)) params.set(key, String(value));
    return params.toString();
  }

  /**
   * @private Server-Sent Events over fetch (so the token travels in a header), one stream per subscription.
   * @param {Subscription} subscription
   */
  async runSse(subscription) {
    const signal = /** @type {AbortController} */ (subscription.stream).signal;
    try {
      await this.ensurePosition(subscription);
      const position = subscription.cursor.lastId;
      /** @type {Record<string, number>} */
      const start = position === undefined && subscription.options.tail !== undefined ? { tail: subscription.options.tail } : { since: position ?? 0 };
      if (subscription.options.presence) start.presence = 1;
      const response = await this.fetchHub(
        `/sse?${this.query(subscription, start)}`,
        { signal, headers: { accept: 'text/event-stream' } },
      );
      if (!response.ok || !response.body) throw new HubError(response.status, 'sse', 'the SSE stream was refused');
      this.failures = 0;
      this.attempt = 0;
      this.setState('degraded');
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          this.onSseBlock(subscription, buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
      if (!signal.aborted) this.scheduleLoopRestart(subscription, true);
    } catch (error) {
      if (!signal.aborted) this.scheduleLoopRestart(subscription, false);
    }
  }

  /** @private @param {Subscription} subscription @param {string} block */
  onSseBlock(subscription, block) {
    /** @type {Record<string, string>} */
    const fields = {};
    for (const line of block.split('\n')) {
      const colon = line.indexOf(': ');
      if (colon > 0) fields[line.slice(0, colon)] = line.slice(colon + 2);
    }
    if (fields.data === undefined) return;
    const data = JSON.parse(fields.data);
    // `@disconnect`: an operator closed the stream (`@` is no topic character, so no event is named so).
    if (fields.event === '@disconnect') {
      if (data.code === 4003) this.stopRevoked(data.code, data.reason);
    } else if (fields.event === '@presence' || fields.event === '@join' || fields.event === '@leave') {
      this.onPresenceFrame(subscription, data);
    } else if (fields.event === 'reset') this.reset(subscription, data, Number(fields.id));
    else this.apply(subscription, data);
  }

  /**
   * @private Long-poll, one loop per subscription.
   * @param {Subscription} subscription
   */
  async runPoll(subscription) {
    const signal = /** @type {AbortController} */ (subscription.stream).signal;
    try {
      await this.ensurePosition(subscription);
      this.setState('degraded');
      // Long-poll carries no joins and leaves: the members once, when the loop starts.
      if (subscription.options.presence) {
        for (const topic of subscription.topics.filter((t) => !t.endsWith('*'))) {
          const answer = await this.presence(topic, subscription.filter).catch(() => undefined);
          if (answer) this.onPresenceFrame(subscription, { type: 'presence', topic, members: answer.members });
        }
      }
      while (!signal.aborted) {
        const wait = this.options.pollWaitSeconds ?? 25;
        const position = subscription.cursor.lastId;
        /** @type {Record<string, number>} */
        const start = position === undefined && subscription.options.tail !== undefined
          ? { tail: subscription.options.tail }
          : { after: position ?? 0, wait };
        const response = await this.fetchHub(`/api/events?${this.query(subscription, start)}`, { signal });
        const answer = await response.json();
        if (!response.ok) throw new HubError(response.status, answer?.error?.code, answer?.error?.message);
        this.failures = 0;
        this.attempt = 0;
        if (answer.reset) this.reset(subscription, answer.reset, answer.next_after);
        for (const event of answer.events) this.apply(subscription, event);
        subscription.cursor.advanceTo(answer.next_after);
      }
    } catch (error) {
      if (!signal.aborted) this.scheduleLoopRestart(subscription, false);
    }
  }

  /**
   * @private A subscription's SSE or long-poll loop ended: start it again after a backoff (or fall back).
   * @param {Subscription} subscription
   * @param {boolean} connected whether the stream had opened
   */
  async scheduleLoopRestart(subscription, connected) {
    if (this.closed || !this.subscriptions.has(subscription.name)) return;
    this.setState('reconnecting');
    await this.countFailure(connected);
    setTimeout(() => this.start(subscription), backoffDelay(this.attempt++, this.options.backoff));
  }
}

/** An error answer of the hub (`{"error":{"code","message"}}`). */
export class HubError extends Error {
  /** @param {number} status @param {string | undefined} code @param {string | undefined} message */
  constructor(status, code, message) {
    super(`${status} ${code ?? ''}: ${message ?? ''}`);
    this.status = status;
    this.code = code;
  }
}
