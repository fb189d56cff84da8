// The client against a real hub (HUB_URL, set by the Rust test tests/api/js_client.rs that starts one), under Node.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { HubClient } from '../src/index.js';

const url = process.env.HUB_URL;
const skip = url ? false : 'HUB_URL is not set (run through cargo test)';

/** Waits until `condition()` holds, or fails after `ms`. */
async function until(condition, ms = 10000) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A WebSocket that never connects, as behind a proxy that blocks upgrades. */
class BlockedWebSocket {
  constructor() {
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code: 1006 }), 5);
  }
  send() {}
  close() {}
}

test('a Node service moves over by swapping its import: publish, subscribe with a pattern, subscribeExact', { skip }, async () => {
  const hub = new HubClient({ url });
  const chat = [];
  const exact = [];
  const states = [];
  hub.on('state', (state) => states.push(state));
  const stopChat = hub.subscribe('chat:*', (data, event) => chat.push([data.text, event.topic]));
  hub.subscribeExact('chat:2', (data) => exact.push(data.text));
  await until(() => hub.state === 'open');
  await new Promise((resolve) => setTimeout(resolve, 200));

  const id = await hub.publish('chat:1', { text: 'hello' });
  await hub.publish('chat:2', { text: 'two' });
  await until(() => chat.length === 2 && exact.length === 1);
  stopChat();
  await hub.publish('chat:1', { text: 'after unsubscribe' });
  await new Promise((resolve) => setTimeout(resolve, 300));
  hub.close();

  assert.ok(Number.isInteger(id) && id > 0);
  assert.deepEqual(chat, [['hello', 'chat:1'], ['two', 'chat:2']]);
  assert.deepEqual(exact, ['two']);
  assert.deepEqual(states, ['open', 'closed']);
  assert.throws(() => hub.subscribeExact('chat:*', () => {}), /not an exact topic/);
  await assert.rejects(hub.publish('chat:1', 'not an object'), /JSON object/);
});

for (const transports of [['sse'], ['poll'], ['websocket', 'sse']]) {
  test(`with ${transports.join(' then ')}${transports.length > 1 ? ' (WebSocket blocked)' : ''} every event arrives once, in order`, { skip }, async () => {
    const publisher = new HubClient({ url });
    const hub = new HubClient({ url, transports, WebSocket: /** @type {any} */ (BlockedWebSocket), fallbackAfter: 1,
                                backoff: { initialMs: 10, maxMs: 50 }, pollWaitSeconds: 1 });
    const topic = `t.${transports.join('-')}.${Date.now()}`;
    const got = [];
    hub.subscribe(topic, (data, event) => got.push([data.n, event.id]));
    await until(() => hub.state === 'degraded');
    await new Promise((resolve) => setTimeout(resolve, 300));

    for (let n = 0; n < 20; n++) await publisher.publish(topic, { n });
    await until(() => got.length >= 20);
    await new Promise((resolve) => setTimeout(resolve, 300));
    hub.close();
    publisher.close();

    assert.deepEqual(got.map(([n]) => n), [...Array(20).keys()], 'every event once, in order');
    assert.ok(got.every(([, id], i) => i === 0 || id > got[i - 1][1]), 'ids increase');
    assert.equal(hub.transport, transports.at(-1));
  });
}

test('a subscription resumes from its last id after the connection drops', { skip }, async () => {
  const publisher = new HubClient({ url });
  const hub = new HubClient({ url, backoff: { initialMs: 10, maxMs: 50 } });
  const topic = `resume.${Date.now()}`;
  const got = [];
  const states = [];
  hub.on('state', (state) => states.push(state));
  hub.subscribe(topic, (data) => got.push(data.n));
  await until(() => hub.state === 'open');
  await new Promise((resolve) => setTimeout(resolve, 200));
  await publisher.publish(topic, { n: 1 });
  await until(() => got.length === 1);

  hub.socket?.close(); // the connection drops
  await publisher.publish(topic, { n: 2 }); // published while it is down
  await until(() => got.length === 2 && hub.state === 'open');
  await publisher.publish(topic, { n: 3 });
  await until(() => got.length === 3);
  hub.close();
  publisher.close();

  assert.deepEqual(got, [1, 2, 3]);
  assert.ok(states.includes('reconnecting'));
});

test('a subscription with tail starts on the last events on every transport, then goes on live', { skip }, async () => {
  for (const transports of [['websocket'], ['sse'], ['poll']]) {
    const hub = new HubClient({ url, transports: /** @type {any} */ (transports), pollWaitSeconds: 1 });
    const topic = `tail.${transports[0]}.${Date.now()}`;
    const ids = [];
    for (let n = 0; n < 8; n++) ids.push(await hub.publish(topic, { n }));
    const got = [];
    hub.subscribe(topic, (data, event) => got.push(event.id), { tail: 3 });
    await until(() => got.length === 3);
    const live = await hub.publish(topic, { n: 99 });
    await until(() => got.length === 4);
    assert.deepEqual(got, [...ids.slice(-3), live], `${transports}: the last three, then live`);
    assert.throws(() => hub.subscribe(topic, () => {}, { tail: 3, since: 1 }), /tail or since/);
    // As the tests above: a moment before closing.
    await new Promise((resolve) => setTimeout(resolve, 300));
    hub.close();
  }
});

test('presence: the members on WebSocket and SSE, once on long-poll, and who is there from presence()', { skip }, async () => {
  // The test hub runs in development mode: connections have no subject, so they are counted, not listed.
  for (const transports of [['websocket'], ['sse'], ['poll']]) {
    const hub = new HubClient({ url, transports: /** @type {any} */ (transports), pollWaitSeconds: 1 });
    const topic = `presence.${transports[0]}.${Date.now()}`;
    /** @type {unknown[]} */
    const heard = [];
    hub.subscribe(topic, () => {}, { presence: true, onPresence: (members, on) => heard.push([on, members]) });
    await until(() => heard.length === 1);
    const answer = await hub.presence(topic);
    assert.deepEqual(heard, [[topic, []]], `${transports}`);
    assert.equal(answer.topic, topic);
    assert.deepEqual(answer.members, []);
    assert.equal(answer.anonymous, transports[0] === 'poll' ? 0 : 1, `${transports}: a long-poll is no connection`);
    await assert.rejects(hub.presence('run.logs'), /400 bad_request/);
    await new Promise((resolve) => setTimeout(resolve, 300));
    hub.close();
  }
});
