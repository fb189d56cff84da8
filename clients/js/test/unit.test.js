// Unit tests of the client's parts: backoff and jitter bounds, de-duplication, cursor merge.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Cursor, backoffDelay } from '../src/index.js';

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

test('merging two transports\' cursors keeps the furthest position and every recent id', () => {
  const websocket = new Cursor(10);
  websocket.accept(11);
  websocket.accept(12);
  const poll = new Cursor(10);
  poll.accept(11);
  poll.accept(14);
  websocket.merge(poll);
  assert.equal(websocket.lastId, 14);
  assert.equal(websocket.accept(13), false, 'never applied twice, never behind');
  assert.equal(websocket.accept(15), true);
  const fresh = new Cursor(undefined);
  fresh.advanceTo(7);
  fresh.advanceTo(3);
  assert.equal(fresh.lastId, 7, 'positions only move forward');
});
