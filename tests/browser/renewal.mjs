// The staff dashboard on short-lived tokens, in headless Chromium (Debian's, driven by playwright-core), against a
// real hub process with no clock leeway:
//   node renewal.mjs <hub binary> <screenshot dir>
// A token source on another port signs 10-second tokens. The page must stay on one WebSocket across three renewals
// and apply every event published meanwhile; its operations panel lists the connections; when an operator revokes
// its subject, the page says so and stops (no reconnect loop).
// Prints one JSON line: {"ok": true, ...} or {"ok": false, "failed": "..."}.
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import http from 'node:http';

import { chromium } from 'playwright-core';

import { freePort, until } from './support.mjs';

const [binary, shots] = process.argv.slice(2);
const SECRET = 'a-browser-test-secret-long-enough-for-hs256';
const children = new Set();

const base64url = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/** An HS256 token for `claims` (the hub verifies it with the same secret). */
function sign(claims) {
  const unsigned = `${base64url({ alg: 'HS256', typ: 'JWT' })}.${base64url(claims)}`;
  return `${unsigned}.${createHmac('sha256', SECRET).update(unsigned).digest('base64url')}`;
}

const now = () => Math.floor(Date.now() / 1000);

const port = await freePort();
const tokenPort = await freePort();
const operator = sign({ sub: 'ops', exp: now() + 3600, admin: true, topics: ['*'], publish: ['*'] });
const result = { ok: false };
let browser;
let tokenServer;
try {
  const hub = spawn(binary, [], {
    env: {
      PATH: process.env.PATH,
      HUB_BIND: `127.0.0.1:${port}`,
      HUB_JWT_SECRET: SECRET,
      HUB_JWT_LEEWAY: '0s',
      HUB_PUBLISH_RATE: '0',
      RUST_LOG: 'warn',
    },
    stdio: 'ignore',
  });
  children.add(hub);
  await until('the hub is ready', async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null))?.ok);

  // The token source an OIDC front end would be: a fresh 10-second admin token for staff-1 on every request.
  let issued = 0;
  tokenServer = http.createServer((request, response) => {
    issued += 1;
    const token = sign({ sub: 'staff-1', iat: now(), exp: now() + 10, admin: true, topics: ['*'] });
    response.writeHead(200, {
      'content-type': 'application/json',
      'access-control-allow-origin': request.headers.origin ?? '*',
      'access-control-allow-credentials': 'true',
      'cache-control': 'no-store',
    });
    response.end(JSON.stringify({ token }));
  });
  await new Promise((resolve) => tokenServer.listen(tokenPort, '127.0.0.1', resolve));

  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
  let sockets = 0;
  let refreshes = 0;
  const closes = [];
  page.on('websocket', (socket) => {
    sockets += 1;
    socket.on('close', () => closes.push(Date.now()));
    socket.on('framesent', (frame) => {
      if (String(frame.payload).includes('"op":"refresh"')) refreshes += 1;
    });
  });
  const tokenUrl = encodeURIComponent(`http://127.0.0.1:${tokenPort}/token`);
  await page.goto(`http://127.0.0.1:${port}/dashboard/?tokenUrl=${tokenUrl}`);
  await until('the page is live', () => page.evaluate(() => document.body.dataset.connection === 'open'));

  // Events all along three renewals of the 10-second token (renewed about 3 s before each expiry).
  const published = [];
  const started = Date.now();
  let n = 0;
  while (Date.now() - started < 26000) {
    n += 1;
    const response = await fetch(`http://127.0.0.1:${port}/api/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${operator}` },
      body: JSON.stringify({ topic: 'run.events', scope: { project_id: 'p1', run_id: `r${n % 3}` }, payload: { status: 'running', step: `step ${n}` } }),
    });
    if (!response.ok) throw new Error(`publish: ${response.status} ${await response.text()}`);
    published.push((await response.json()).ids[0]);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  const last = published[published.length - 1];
  await until('every event is applied', () => page.evaluate((id) => window.hubDashboard.state.lastId >= id, last));
  const applied = await page.evaluate(() => window.hubDashboard.state.applied);
  result.published = published.length;
  result.applied = applied;
  result.tokens = issued;
  result.refreshes = refreshes;
  result.sockets = sockets;
  if (sockets !== 1 || closes.length !== 0) throw new Error(`the page reconnected: ${sockets} WebSockets, ${closes.length} closed`);
  if (refreshes < 3) throw new Error(`${refreshes} renewals on the open WebSocket, not three`);
  if (applied !== published.length) throw new Error(`applied ${applied} of ${published.length} events`);

  // Two more people's SSE streams; an operator disconnects one of them: the panel lists the others and the trail
  // shows the disconnect.
  const streams = new AbortController();
  for (const [subject, topics] of [['analyst-7', 'run.*'], ['viewer-3', 'deploy.*']]) {
    const token = sign({ sub: subject, exp: now() + 600, topics: [topics] });
    const response = await fetch(`http://127.0.0.1:${port}/sse?topics=${encodeURIComponent(topics)}`, {
      headers: { authorization: `Bearer ${token}` },
      signal: streams.signal,
    });
    if (!response.ok) throw new Error(`sse for ${subject}: ${response.status}`);
  }
  await until('the operations panel lists every connection', () =>
    page.evaluate(() => !document.getElementById('ops').hidden && document.querySelectorAll('#ops-connections tr[data-connection]').length === 3));
  const disconnect = await fetch(`http://127.0.0.1:${port}/api/admin/disconnect`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${operator}` },
    body: JSON.stringify({ subject: 'viewer-3' }),
  });
  if (!disconnect.ok || (await disconnect.json()).closed !== 1) throw new Error('the disconnect of viewer-3 closed nothing');
  await until('the trail shows the disconnect and the panel the two left', () =>
    page.evaluate(() => document.querySelectorAll('#ops-trail li:not(.empty)').length === 1 &&
      document.querySelectorAll('#ops-connections tr[data-connection]').length === 2));
  if (shots) {
    await page.evaluate(() => document.getElementById('ops').scrollIntoView());
    await page.screenshot({ path: `${shots}/dashboard-operations.png`, fullPage: true });
  }

  // An operator revokes staff-1 (through the hub's admin API, as the panel's Revoke button does).
  const revoke = await fetch(`http://127.0.0.1:${port}/api/admin/revoke`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${operator}` },
    body: JSON.stringify({ subject: 'staff-1' }),
  });
  const outcome = await revoke.json();
  if (!revoke.ok || outcome.closed !== 1) throw new Error(`revoke: ${revoke.status} ${JSON.stringify(outcome)}`);
  await until('the page says it was revoked and stops', () =>
    page.evaluate(() => !document.getElementById('revoked').hidden && document.body.dataset.connection === 'closed'));
  await new Promise((resolve) => setTimeout(resolve, 3000));
  if (sockets !== 1) throw new Error(`the page reconnected after the revocation: ${sockets} WebSockets`);
  if (shots) await page.screenshot({ path: `${shots}/dashboard-revoked.png` });
  streams.abort();
  result.ok = true;
} catch (error) {
  result.failed = String(error?.stack ?? error);
} finally {
  await browser?.close();
  tokenServer?.close();
  for (const child of children) child.kill('SIGKILL');
  console.log(JSON.stringify(result));
}
