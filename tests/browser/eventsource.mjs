// A browser's EventSource loses its connection to the hub and must resume by itself, without loss or duplicate.
//
//   node tests/browser/eventsource.mjs <hub port>
//
// Chromium (Debian's, never a downloaded one) opens a page whose EventSource reaches the hub through a TCP proxy
// run here; the proxy's sockets are destroyed mid-stream, events are published meanwhile, and the page must end up
// with every event exactly once, in order. Prints one JSON line; exits non-zero on failure.
import http from 'node:http';
import net from 'node:net';
import { chromium } from 'playwright-core';

const hubPort = Number(process.argv[2]);
const hub = `http://127.0.0.1:${hubPort}`;

const sockets = new Set();
const proxy = net.createServer((client) => {
  const upstream = net.connect(hubPort, '127.0.0.1');
  for (const s of [client, upstream]) {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => { client.destroy(); upstream.destroy(); sockets.delete(s); });
  }
  client.pipe(upstream);
  upstream.pipe(client);
});
await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
const proxyPort = proxy.address().port;

const page = `<!doctype html><title>eventsource</title><script>
  window.received = []; window.opens = 0;
  const source = new EventSource('http://127.0.0.1:${proxyPort}/sse?topics=demo');
  source.onopen = () => { window.opens += 1; };
  source.addEventListener('demo', (e) => window.received.push(Number(e.lastEventId)));
</script>`;
const pages = http.createServer((_, res) => { res.writeHead(200, { 'content-type': 'text/html' }); res.end(page); });
await new Promise((resolve) => pages.listen(0, '127.0.0.1', resolve));

async function publish(n) {
  const events = Array.from({ length: n }, (_, i) => ({ topic: 'demo', payload: { i } }));
  const res = await fetch(`${hub}/api/publish`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(events),
  });
  if (!res.ok) throw new Error(`publish answered ${res.status}`);
  return (await res.json()).ids;
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
    '--no-first-run', '--disable-component-update', '--disable-sync'],
});
let result;
try {
  const tab = await browser.newPage();
  await tab.goto(`http://127.0.0.1:${pages.address().port}/`);
  await tab.waitForFunction(() => window.opens >= 1, null, { timeout: 15000 });
  const published = await publish(5);
  await tab.waitForFunction(() => window.received.length >= 5, null, { timeout: 15000 });

  for (const s of sockets) s.destroy();
  published.push(...await publish(5));
  await tab.waitForFunction(() => window.opens >= 2, null, { timeout: 20000 });
  published.push(...await publish(2));
  await tab.waitForFunction((n) => window.received.length >= n, published.length, { timeout: 20000 });
  await new Promise((resolve) => setTimeout(resolve, 300));

  const { received, opens } = await tab.evaluate(() => ({ received: window.received, opens: window.opens }));
  const inOrder = received.every((id, i) => i === 0 || id > received[i - 1]);
  const same = JSON.stringify(received) === JSON.stringify(published);
  result = { ok: inOrder && same && opens >= 2, opens, published, received };
} catch (error) {
  result = { ok: false, error: String(error) };
} finally {
  await browser.close();
  proxy.close();
  pages.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
