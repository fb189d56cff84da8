// What the browser scripts share: a free loopback port, and waiting for a condition.
import net from 'node:net';

/** A port nothing listens on now, on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Waits until `condition()` (sync or async) holds, or fails with `what` after `ms`. */
export async function until(what, condition, ms = 15000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
