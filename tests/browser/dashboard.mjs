// The staff dashboard in headless Chromium (Debian's, driven by playwright-core), against real hub processes.
//   node dashboard.mjs <hub binary> <database url> <screenshot dir>
// Prints one JSON line: {"ok": true, "checks": [...]} or {"ok": false, "failed": "...", ...}.
import { spawn } from 'node:child_process';

import { chromium } from 'playwright-core';

import { freePort, until } from './support.mjs';

const [binary, databaseUrl, shots] = process.argv.slice(2);
const checks = [];
const children = new Set();

/** Starts the hub binary on `port` with `env` and waits for /readyz. */
async function startHub(port, env = {}) {
  const child = spawn(binary, [], {
    env: { PATH: process.env.PATH, HUB_BIND: `127.0.0.1:${port}`, HUB_PUBLISH_RATE: '0', RUST_LOG: 'warn', ...env },
    stdio: 'ignore',
  });
  children.add(child);
  child.on('exit', () => children.delete(child));
  await until('the hub is ready', async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null))?.ok);
  return child;
}

function kill(child) {
  return new Promise((resolve) => {
    child.once('exit', resolve);
    child.kill('SIGKILL');
  });
}

async function publish(port, events) {
  const response = await fetch(`http://127.0.0.1:${port}/api/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(events),
  });
  if (!response.ok) throw new Error(`publish: ${response.status} ${await response.text()}`);
  return (await response.json()).ids;
}

const run = (id, status, step) => ({ topic: 'run.events', scope: { project_id: 'demo', run_id: id }, payload: { status, step } });
const chunk = (id, seq, text, eos = false) => ({ topic: 'run.logs', scope: { project_id: 'demo', run_id: id }, seq, payload: { chunk: text, eos } });
const alert = (message) => ({ topic: 'system.errors', scope: {}, payload: { source: 'scheduler', message } });
const deploy = (id, status) => ({ topic: 'deploy.events', scope: { project_id: 'demo', deploy_id: id }, payload: { status } });
const flag = (entity_id, type, action) => ({
  topic: 'flags.audit',
  scope: { project_id: 'demo', env: 'prod' },
  payload: { source: 'audit', type, timestamp: '2026-11-23T10:00:00Z', project_id: 'demo', environment: 'prod', entity: 'feature', entity_id, action },
});

/** What the page shows, read from its DOM and state. */
async function view(page) {
  return page.evaluate(() => ({
    connection: document.body.dataset.connection,
    transport: document.getElementById('transport').textContent,
    applied: window.hubDashboard.state.applied,
    alerts: [...document.querySelectorAll('#alerts li:not(.empty) span:nth-child(2)')].map((e) => e.textContent),
    runs: [...document.querySelectorAll('#runs tr[data-run]')].map((r) => [r.dataset.run, r.querySelector('.badge').textContent]),
    log: document.getElementById('log').textContent,
    logRun: document.getElementById('log-run').textContent,
    eos: !document.getElementById('log-eos').hidden,
    deploys: document.querySelectorAll('#deploys li:not(.empty)').length,
    flags: [...document.querySelectorAll('#flags tr[data-flag]')].map((r) => r.textContent),
    degradedBanner: !document.getElementById('degraded').hidden,
    resetBanner: !document.getElementById('reset').hidden,
  }));
}

const alertsOf = async (page) => (await view(page)).alerts;

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
try {
  // 1. Events published over HTTP appear on the page; two tabs show the same state.
  {
    const port = await freePort();
    const hub = await startHub(port);
    const tabs = [await browser.newPage({ viewport: { width: 1280, height: 900 } }), await browser.newPage({ viewport: { width: 1280, height: 900 } })];
    for (const tab of tabs) await tab.goto(`http://127.0.0.1:${port}/dashboard`);
    await until('both tabs open', async () => (await Promise.all(tabs.map(view))).every((v) => v.connection === 'open'));
    await publish(port, [run('r-1001', 'running', 'step 1/3'), chunk('r-1001', 1, 'cargo build --release\n')]);
    await publish(port, [chunk('r-1001', 3, 'done\n', true), chunk('r-1001', 2, 'compiling hub v0.1.0\n')]);
    await publish(port, [run('r-1001', 'succeeded', 'step 3/3'), deploy('d-77', 'in_progress'), deploy('d-77', 'succeeded')]);
    await publish(port, [alert('queue latency above 5 s'), flag('new-checkout', 'feature_updated', 'updated'),
      flag('dark-mode', 'pending_change_created', 'created'), flag('old-banner', 'feature_deleted', 'deleted')]);
    // Applied, and drawn: each tab draws on its next animation frame, which a background tab gets later.
    await until('the events are on both pages', async () => {
      const shown = await Promise.all(tabs.map(view));
      return shown.every((v) => v.applied === 11 && v.deploys === 1 && v.eos);
    });
    const [first, second] = await Promise.all(tabs.map(view));
    if (first.log !== 'cargo build --release\ncompiling hub v0.1.0\ndone\n' || !first.eos) throw new Error(`log tail: ${JSON.stringify(first.log)}`);
    if (JSON.stringify(first.runs) !== JSON.stringify([['r-1001', 'succeeded']])) throw new Error(`runs: ${JSON.stringify(first.runs)}`);
    if (first.deploys !== 1 || first.flags.length !== 3 || first.alerts.length !== 1) throw new Error(`panels: ${JSON.stringify(first)}`);
    if (JSON.stringify(first) !== JSON.stringify(second)) throw new Error(`the tabs differ: ${JSON.stringify([first, second])}`);
    checks.push('events appear on the page, log chunks in seq order with the end of stream, two tabs agree');
    if (shots) await tabs[0].screenshot({ path: `${shots}/dashboard.png`, fullPage: true });

    // 2. A reset makes the page reload its state: the hub restarts on a new, empty memory log, so the page's
    // position lies beyond the new log's head.
    await kill(hub);
    await until('reconnecting shows', async () => (await view(tabs[0])).connection === 'reconnecting');
    const replaced = await startHub(port);
    await until('reconnected', async () => (await view(tabs[0])).connection === 'open');
    await publish(port, [alert('after the restart')]);
    await until('the page reloaded its state', async () => JSON.stringify(await alertsOf(tabs[0])) === '["after the restart"]');
    const reloaded = await view(tabs[0]);
    if (!reloaded.resetBanner || reloaded.runs.length !== 0) throw new Error(`after reset: ${JSON.stringify(reloaded)}`);
    if (reloaded.logRun !== 'select a run' || reloaded.log !== '') throw new Error(`the log panel names a run that is gone: ${JSON.stringify(reloaded)}`);
    await publish(port, [run('r-2002', 'running', 'step 1/2'), chunk('r-2002', 1, 'after the reset\n')]);
    await until('the log panel follows the new run', async () => {
      const shown = await view(tabs[0]);
      return shown.logRun === 'r-2002' && shown.log === 'after the reset\n';
    });
    checks.push('a reset makes the page reload its state; the log panel follows the runs that exist');
    for (const tab of tabs) await tab.close();
    await kill(replaced);
  }

  // 3. On PostgreSQL, the hub killed and restarted: the indicator shows reconnecting, and every event published
  // meanwhile (into the log, by another hub) appears once.
  {
    const port = await freePort();
    const otherPort = await freePort();
    const env = { HUB_BACKEND: 'postgres', DATABASE_URL: databaseUrl, HUB_DB_POOL_SIZE: '3' };
    let hub = await startHub(port, env);
    const other = await startHub(otherPort, env);
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${port}/dashboard`);
    await until('open', async () => (await view(page)).connection === 'open');
    await publish(otherPort, [alert('before 1'), alert('before 2')]);
    await until('before', async () => (await alertsOf(page)).length === 2);
    await kill(hub);
    await until('reconnecting shows', async () => (await view(page)).connection === 'reconnecting');
    for (let n = 1; n <= 5; n++) await publish(otherPort, [alert(`while down ${n}`)]);
    hub = await startHub(port, env);
    await until('reconnected', async () => (await view(page)).connection === 'open');
    await publish(otherPort, [alert('after')]);
    await until('every event', async () => (await alertsOf(page)).length === 8);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const alerts = await alertsOf(page);
    const expected = ['after', 'while down 5', 'while down 4', 'while down 3', 'while down 2', 'while down 1', 'before 2', 'before 1'];
    if (JSON.stringify(alerts) !== JSON.stringify(expected)) throw new Error(`after the restart: ${JSON.stringify(alerts)}`);
    checks.push('the hub killed and restarted on PostgreSQL: reconnecting shown, every event once');
    await page.close();
    await kill(hub);
    await kill(other);
  }

  // 4. WebSocket refused (as by a proxy that blocks upgrades: every WebSocket is closed before it opens): the page
  // falls back and shows every event once, with the degraded banner.
  {
    const port = await freePort();
    const hub = await startHub(port);
    const page = await browser.newPage({ viewport: { width: 1280, height: 700 } });
    await page.routeWebSocket(/\/ws/, (socket) => socket.close({ code: 1006 }));
    await page.goto(`http://127.0.0.1:${port}/dashboard`);
    await until('degraded', async () => (await view(page)).connection === 'degraded', 20000);
    for (let n = 1; n <= 5; n++) await publish(port, [alert(`fallback ${n}`), run(`r-${n}`, 'running', 'step 1/1')]);
    await until('every event through the fallback', async () => (await view(page)).applied === 10);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const shown = await view(page);
    if (shown.applied !== 10 || shown.alerts.length !== 5 || !shown.degradedBanner || shown.transport === 'websocket') {
      throw new Error(`fallback: ${JSON.stringify(shown)}`);
    }
    checks.push(`WebSocket refused: the page fell back to ${shown.transport} and shows every event once`);
    if (shots) await page.screenshot({ path: `${shots}/dashboard-degraded.png` });
    await page.close();
    await kill(hub);
  }

  // 5. WebSocket blocked, then unblocked (a proxy restarted): the page falls back, then returns to WebSocket by
  // itself, and every event published before, during and after the switches appears once, in order.
  {
    const port = await freePort();
    const hub = await startHub(port);
    const page = await browser.newPage({ viewport: { width: 1280, height: 700 } });
    let blocked = true;
    await page.routeWebSocket(/\/ws/, (socket) => (blocked ? socket.close({ code: 1006 }) : socket.connectToServer()));
    await page.goto(`http://127.0.0.1:${port}/dashboard`);
    await until('degraded', async () => (await view(page)).connection === 'degraded', 20000);
    const published = [];
    let publishing = true;
    const publisher = (async () => {
      for (let n = 1; publishing; n++) {
        await publish(port, [alert(`steady ${n}`)]);
        published.push(`steady ${n}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
    await until('events through the fallback', async () => (await view(page)).applied >= 5);
    const fallback = (await view(page)).transport;
    blocked = false;
    await until('back on WebSocket', async () => {
      const shown = await view(page);
      return shown.transport === 'websocket' && shown.connection === 'open';
    }, 30000);
    await new Promise((resolve) => setTimeout(resolve, 500));
    publishing = false;
    await publisher;
    await until('every event', async () => (await view(page)).applied === published.length);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const shown = await view(page);
    const expected = [...published].reverse().slice(0, 50);
    if (shown.applied !== published.length || JSON.stringify(shown.alerts) !== JSON.stringify(expected) || shown.degradedBanner) {
      throw new Error(`return to WebSocket: ${JSON.stringify({ shown, published })}`);
    }
    checks.push(`WebSocket blocked then unblocked: ${fallback}, then WebSocket again; ${published.length} events once, in order`);
    await page.close();
    await kill(hub);
  }
  // 6. A run with a long log: the panel opens on its last 500 lines (the tail of the run's log, not all of it),
  // then follows it live.
  {
    const port = await freePort();
    const hub = await startHub(port);
    await publish(port, [run('r-long', 'running', 'step 1/1')]);
    for (let batch = 0; batch < 6; batch++) {
      const lines = Array.from({ length: 100 }, (_, i) => batch * 100 + i + 1);
      await publish(port, lines.map((n) => chunk('r-long', n, `line ${n}\n`)));
    }
    const page = await browser.newPage({ viewport: { width: 1280, height: 700 } });
    await page.goto(`http://127.0.0.1:${port}/dashboard`);
    await until('the log panel shows the run', async () => (await view(page)).log.startsWith('line 101\n'));
    await publish(port, [chunk('r-long', 601, 'line 601\n')]);
    await until('the live line follows', async () => (await view(page)).log.endsWith('line 600\nline 601\n'));
    const lines = (await view(page)).log.trim().split('\n');
    if (lines.length !== 501 || lines[0] !== 'line 101') throw new Error(`log tail: ${lines.length} lines from ${lines[0]}`);
    checks.push('a long log opens on its last 500 lines, then live');
    await page.close();
    await kill(hub);
  }
  console.log(JSON.stringify({ ok: true, checks }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, failed: String(error?.stack ?? error), checks }));
} finally {
  await browser.close();
  for (const child of children) child.kill('SIGKILL');
}
