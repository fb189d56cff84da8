// How long an operator's disconnect takes to close a connection on another hub: `calls` times, a WebSocket of a
// fresh subject on hub B, then `POST /api/admin/disconnect` for that subject on hub A; the time from the request to
// the close frame at the client, and to the answer (which comes once every live hub has answered).
//   node --experimental-websocket bench/admin-latency.mjs <hub A url> <hub B url> <HS256 secret> [calls]
// Prints one JSON line with p50/p99/max of both.
import { createHmac } from 'node:crypto';

const [hubA, hubB, secret, calls = '100'] = process.argv.slice(2);
const base64url = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);
function sign(claims) {
  const unsigned = `${base64url({ alg: 'HS256', typ: 'JWT' })}.${base64url(claims)}`;
  return `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`;
}
const operator = sign({ sub: 'bench-ops', exp: now() + 3600, admin: true });

function open(subject) {
  const token = sign({ sub: subject, exp: now() + 600, topics: ['bench.*'] });
  const socket = new WebSocket(`${hubB.replace(/^http/, 'ws')}/ws?topics=bench.a&access_token=${token}`);
  const closed = new Promise((resolve) => socket.addEventListener('close', (event) => resolve({ at: performance.now(), code: event.code })));
  const subscribed = new Promise((resolve, reject) => {
    socket.addEventListener('message', (message) => {
      if (JSON.parse(message.data).type === 'subscribed') resolve();
    });
    socket.addEventListener('error', reject);
  });
  return { subscribed, closed };
}

const percentile = (values, p) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
};

const toClose = [];
const toAnswer = [];
for (let i = 0; i < Number(calls); i++) {
  const subject = `bench-${process.pid}-${i}`;
  const connection = open(subject);
  await connection.subscribed;
  const started = performance.now();
  const response = await fetch(`${hubA}/api/admin/disconnect`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${operator}` },
    body: JSON.stringify({ subject }),
  });
  const answered = performance.now();
  const outcome = await response.json();
  const { at, code } = await connection.closed;
  if (!response.ok || outcome.closed !== 1 || code !== 4002) {
    throw new Error(`call ${i}: ${response.status} ${JSON.stringify(outcome)}, close ${code}`);
  }
  toClose.push(at - started);
  toAnswer.push(answered - started);
}
const summary = (values) => ({
  p50_ms: +percentile(values, 50).toFixed(2),
  p99_ms: +percentile(values, 99).toFixed(2),
  max_ms: +Math.max(...values).toFixed(2),
});
console.log(JSON.stringify({ calls: Number(calls), to_close: summary(toClose), to_answer: summary(toAnswer) }));
