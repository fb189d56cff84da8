// Unit tests of the client's parts: backoff and jitter bounds, de-duplication, the cursor transports share.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Cursor, HubClient, backoffDelay } from '../src/index.js';

/**
 * Fake WebSockets that open and say `welcome` with `expiresAt`, recording what is sent; `close(code)` from the hub.
 * While `blocked()` holds, a socket closes at once instead, as behind a proxy that refuses upgrades.
 */
function fakeSockets(/** @type {() => number | undefined} */ expiresAt, blocked = () => false) {
  /** @type {any[]} */
  const sockets = [];
  class FakeSocket {
    /** @param {string} url */
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      /** @type {string[]} */
      this.sent = [];
      sockets.push(this);
      setTimeout(() => {
        if (blocked()) return this.onclose?.();
        this.readyState = 1;
        this.onopen?.();
        const welcome = { type: 'welcome', session: 's', node: 'n', protocol: 1, expires_at: expiresAt() };
        this.onmessage?.({ data: JSON.stringify(welcome) });
      }, 1);
    }
    /** @param {string} frame */
    send(frame) { this.sent.push(frame); }
    close() { this.readyState = 3; }
    /** The hub closes the connection with `code`. @param {number} code */
    closeFromHub(code) {
      this.readyState = 3;
      this.onclose?.({ code, reason: `closed with ${code}` });
    }
  }
  return { sockets, FakeSocket };
}

const until = async (/** @type {() => boolean} */ condition) => {
  for (let i = 0; i < 800 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.ok(condition());
};

test('backoff delays are drawn between 0 and the capped exponential (full jitter)', () => {
  const options = { initialMs: 100, maxMs: 5000 };
  assert.equal(backoffDelay(0, options, () => 0), 0);
  assert.equal(backoffDelay(0, options, () => 0.999999), 100);
  assert.equal(backoffDelay(3, options, () => 0.999999), 800);
  assert.equal(backoffDelay(10, options, () => 0.999999), 5000, 'capped');
  assert.equal(backoffDelay(1000, options, () => 0.999999), 5000, 'no overflow for huge attempts');
  for (let attempt = 0; attempt < 20; attempt++) {
    const delay = backoffDelay(attempt, options);
    assert.ok(delay >= 0 && delay <= Math.min(5000, 100 * 2 ** attempt), `${attempt}: ${delay}`);
  }
  const draws = new Set(Array.from({ length: 50 }, () => backoffDelay(8, options)));
  assert.ok(draws.size > 10, 'jitter spreads reconnects');
});

test('a cursor applies each id once and only forward', () => {
  const cursor = new Cursor(undefined, 3);
  assert.equal(cursor.accept(5), true);
  assert.equal(cursor.accept(5), false, 'duplicate');
  assert.equal(cursor.accept(4), false, 'behind the position');
  assert.equal(cursor.accept(9), true);
  assert.equal(cursor.lastId, 9);
});

test('the de-duplication memory is bounded', () => {
  const cursor = new Cursor(undefined, 3);
  for (const id of [1, 2, 3, 4, 5]) cursor.accept(id);
  assert.equal(cursor.recent.size, 3);
  assert.deepEqual([...cursor.recent], [3, 4, 5]);
});

test('one cursor shared by the transports: an event seen on one is not applied again from another', () => {
  const cursor = new Cursor(10);
  const applied = [];
  const deliver = (ids) => ids.forEach((id) => cursor.accept(id) && applied.push(id));
  deliver([11, 12]); // over WebSocket, which then drops
  deliver([11, 12, 13, 14]); // SSE resumed from an older position replays 11 and 12
  deliver([14, 15]); // long-poll overlaps once more
  assert.deepEqual(applied, [11, 12, 13, 14, 15], 'never twice, never skipped');
  const fresh = new Cursor(undefined);
  fresh.advanceTo(7);
  fresh.advanceTo(3);
  assert.equal(fresh.lastId, 7, 'positions only move forward');
});

test('a hub that is down is waited for; only a transport blocked while the hub answers makes the client fall back', async () => {
  let hubUp = false;
  const fetch = async () => {
    if (!hubUp) throw new TypeError('connection refused');
    return new Response('{}', { status: 200 });
  };
  class NeverOpens { constructor() { this.readyState = 0; } send() {} close() {} }
  const hub = new HubClient({ url: 'http://hub.invalid', fetch, WebSocket: /** @type {any} */ (NeverOpens), fallbackAfter: 2 });
  for (let i = 0; i < 5; i++) await hub.countFailure(false);
  assert.equal(hub.transport, 'websocket', 'the hub is down: no fallback');
  hubUp = true;
  await hub.countFailure(false);
  assert.equal(hub.transport, 'websocket');
  await hub.countFailure(false);
  assert.equal(hub.transport, 'sse', 'blocked twice while the hub answers: SSE');
  await hub.countFailure(true);
  await hub.countFailure(false);
  assert.equal(hub.transport, 'sse', 'an open connection resets the count');
  hub.close();
});

test('a client on a fallback probes WebSocket and moves back, resubscribing from its cursor', async () => {
  let blocked = true;
  const { sockets, FakeSocket } = fakeSockets(() => undefined, () => blocked);
  let polls = 0;
  /** @param {string} url @param {RequestInit} [init] */
  const fetch = async (url, init) => {
    if (url.endsWith('/healthz')) return new Response('ok');
    if (url.includes('/api/health/pubsub')) return Response.json({ log: { head: 0 } });
    polls += 1;
    // One event through the fallback, then nothing new until the poll is aborted.
    if (polls === 1) return Response.json({ events: [{ id: 7, topic: 'a', scope: {}, payload: { n: 7 } }], next_after: 7, reset: null });
    await new Promise((resolve, reject) => {
      setTimeout(resolve, 50);
      init?.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
    });
    return Response.json({ events: [], next_after: 7, reset: null });
  };
  const hub = new HubClient({
    url: 'http://hub.invalid', fetch, WebSocket: /** @type {any} */ (FakeSocket),
    transports: ['websocket', 'poll'], fallbackAfter: 1, backoff: { initialMs: 1, maxMs: 1 }, returnProbe: { initialMs: 10, maxMs: 10 },
  });
  const applied = [];
  hub.subscribe('a', (data) => applied.push(data.n), { since: 0 });
  await until(() => hub.transport === 'poll' && applied.length === 1);
  const probesWhileBlocked = sockets.length;
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.ok(sockets.length > probesWhileBlocked, 'WebSocket is probed while on the fallback');
  blocked = false;
  await until(() => hub.transport === 'websocket' && hub.state === 'open');
  const adopted = sockets[sockets.length - 1];
  await until(() => adopted.sent.length > 0);
  assert.deepEqual(JSON.parse(adopted.sent[0]), { op: 'subscribe', sub: 's1', topics: ['a'], filter: {}, since: 7 });
  assert.deepEqual(applied, [7]);
  hub.close();
});

test('a subscription the hub failed with internal is subscribed again from its cursor', async () => {
  const { sockets, FakeSocket } = fakeSockets(() => undefined);
  const fetch = async () => new Response('ok');
  const hub = new HubClient({ url: 'http://hub.invalid', fetch, WebSocket: /** @type {any} */ (FakeSocket), transports: ['websocket'] });
  const applied = [];
  hub.subscribe('a', (data) => applied.push(data.n), { since: 0 });
  await until(() => sockets.length === 1 && sockets[0].sent.length === 1);
  const socket = sockets[0];
  const deliver = (/** @type {object} */ frame) => socket.onmessage?.({ data: JSON.stringify(frame) });
  deliver({ type: 'event', sub: 's1', id: 4, topic: 'a', scope: {}, payload: { n: 4 } });

  deliver({ type: 'error', sub: 's1', code: 'internal', message: 'the event log is unavailable; subscribe again with since to resume' });

  await until(() => socket.sent.length === 2);
  assert.deepEqual(JSON.parse(socket.sent[1]), { op: 'subscribe', sub: 's1', topics: ['a'], filter: {}, since: 4 });
  assert.deepEqual(applied, [4]);
  hub.close();
});

test('an open WebSocket renews its token ahead of the expiry welcome and refreshed announce, on one connection', async () => {
  const { sockets, FakeSocket } = fakeSockets(() => Math.floor(Date.now() / 1000) + 2);
  let issued = 0;
  const getToken = () => `token-${++issued}`;
  const hub = new HubClient({ url: 'http://hub.invalid', fetch: async () => new Response('ok'), WebSocket: /** @type {any} */ (FakeSocket), transports: ['websocket'], getToken });
  const renewals = [];
  hub.on('refreshed', (/** @type {any} */ info) => renewals.push(info.expiresAt));
  await until(() => sockets.length === 1 && sockets[0].readyState === 1);
  const socket = sockets[0];
  const refreshes = () => socket.sent.map((f) => JSON.parse(f)).filter((f) => f.op === 'refresh');

  await until(() => refreshes().length === 1);
  const expiresAt = Math.floor(Date.now() / 1000) + 2;
  socket.onmessage?.({ data: JSON.stringify({ type: 'refreshed', expires_at: expiresAt }) });
  await until(() => refreshes().length === 2);

  assert.deepEqual(refreshes().map((f) => f.token), ['token-2', 'token-3'], 'a fresh token each time, the first for the connection');
  assert.deepEqual(renewals, [expiresAt]);
  assert.equal(sockets.length, 1, 'no reconnect');
  hub.close();
});

test('each close code is answered as it means: 4001 at once, 4003 stops with revoked, 4029 waits 30 s, 4002 backs off', async () => {
  const { sockets, FakeSocket } = fakeSockets(() => undefined);
  const options = { url: 'http://hub.invalid', fetch: async () => new Response('ok'), WebSocket: /** @type {any} */ (FakeSocket), transports: /** @type {any} */ (['websocket']), backoff: { initialMs: 50, maxMs: 50 } };
  const hub = new HubClient(options);
  await until(() => sockets.length === 1 && sockets[0].readyState === 1);

  sockets[0].closeFromHub(4001);
  await until(() => sockets.length === 2 && sockets[1].readyState === 1);
  sockets[1].closeFromHub(4002);
  await until(() => sockets.length === 3 && sockets[2].readyState === 1);
  const revoked = [];
  hub.on('revoked', (/** @type {any} */ info) => revoked.push(info.code));
  sockets[2].closeFromHub(4003);
  await new Promise((resolve) => setTimeout(resolve, 300));

  assert.deepEqual(revoked, [4003]);
  assert.equal(hub.state, 'closed');
  assert.equal(sockets.length, 3, 'no reconnect after a revocation');

  const limited = new HubClient(options);
  await until(() => sockets.length === 4 && sockets[3].readyState === 1);
  sockets[3].closeFromHub(4029);
  await new Promise((resolve) => setTimeout(resolve, 400));
  assert.equal(sockets.length, 4, 'too many connections: not before 30 s');
  limited.close();
});

test('a subscription that watches presence asks for it and hears the members, then joins and leaves', async () => {
  const { sockets, FakeSocket } = fakeSockets(() => undefined);
  const hub = new HubClient({ url: 'http://hub.invalid', fetch: async () => new Response('ok'), WebSocket: /** @type {any} */ (FakeSocket), transports: ['websocket'] });
  /** @type {unknown[]} */
  const heard = [];
  hub.on('join', (/** @type {any} */ e) => heard.push(['event', e.member.subject]));
  hub.subscribe('chat.room1', () => {}, {
    presence: true,
    onPresence: (members, topic) => heard.push(['members', topic, members.map((m) => m.subject)]),
    onJoin: (member) => heard.push(['join', member.subject, member.info]),
    onLeave: (member) => heard.push(['leave', member.subject]),
  });
  await until(() => sockets.length === 1 && sockets[0].sent.length === 1);
  const deliver = (/** @type {object} */ frame) => sockets[0].onmessage?.({ data: JSON.stringify(frame) });

  deliver({ type: 'presence', sub: 's1', topic: 'chat.room1', members: [{ subject: 'u1' }] });
  deliver({ type: 'join', sub: 's1', topic: 'chat.room1', member: { subject: 'u2', info: { name: 'Ann' } } });
  deliver({ type: 'leave', sub: 's1', topic: 'chat.room1', member: { subject: 'u1' } });

  assert.deepEqual(JSON.parse(sockets[0].sent[0]), { op: 'subscribe', sub: 's1', topics: ['chat.room1'], filter: {}, presence: true });
  assert.deepEqual(heard, [['members', 'chat.room1', ['u1']], ['join', 'u2', { name: 'Ann' }], ['event', 'u2'], ['leave', 'u1']]);
  hub.close();
});
