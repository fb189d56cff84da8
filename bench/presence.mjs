// What presence costs: `members` WebSockets of distinct subjects (half on each hub) subscribe to one room at once,
// then all close; with presence on, a watcher on hub A counts the joins and leaves it is told of. Prints one JSON
// line: how long until every connection was subscribed (and every join told), the same for the closes, and the
// CPU both hubs spent in each phase (from /proc/<pid>/stat, 10 ms ticks).
//   node --experimental-websocket bench/presence.mjs <hub A> <hub B> <secret> <pid A> <pid B> <presence 0|1> [members]
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';

const [hubA, hubB, secret, pidA, pidB, presence, members = '1000'] = process.argv.slice(2);
const watching = presence === '1';
const count = Number(members);
const base64url = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);
function sign(claims) {
  const unsigned = `${base64url({ alg: 'HS256', typ: 'JWT' })}.${base64url(claims)}`;
  return `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`;
}
const token = (subject) => sign({ sub: subject, exp: now() + 600, topics: ['bench.*'], info: { name: subject } });
const cpuMs = () => [pidA, pidB].reduce((sum, pid) => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return sum + (Number(fields[11]) + Number(fields[12])) * 10;
}, 0);
const room = `bench.room${process.pid}`;

const watcher = new WebSocket(`${hubA.replace(/^http/, 'ws')}/ws?access_token=${token('watcher')}`);
let joins = 0;
let leaves = 0;
let subscribed = 0;
let closed = 0;
let greeted;
const greeting = new Promise((resolve) => { greeted = resolve; });
watcher.addEventListener('message', (message) => {
  const frame = JSON.parse(message.data);
  if (frame.type === 'welcome') {
    watcher.send(JSON.stringify({ op: 'subscribe', sub: 'w', topics: [room], presence: watching }));
  } else if (frame.type === 'subscribed' && !watching) greeted();
  else if (frame.type === 'presence') greeted();
  else if (frame.type === 'join') joins++;
  else if (frame.type === 'leave') leaves++;
});
await greeting;
const until = async (condition) => {
  const report = setInterval(() => console.error(JSON.stringify({ subscribed, joins, closed, leaves })), 2000);
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 2));
  clearInterval(report);
};

let cpu = cpuMs();
let started = performance.now();
const sockets = [];
for (let i = 0; i < count; i++) {
  const hub = i % 2 === 0 ? hubA : hubB;
  const socket = new WebSocket(`${hub.replace(/^http/, 'ws')}/ws?topics=${room}&access_token=${token(`u${i}`)}`);
  socket.addEventListener('message', (message) => {
    if (JSON.parse(message.data).type === 'subscribed') subscribed++;
  });
  socket.addEventListener('close', () => closed++);
  sockets.push(socket);
}
await until(() => subscribed === count);
const subscribedMs = performance.now() - started;
await until(() => !watching || joins === count);
const joinedMs = performance.now() - started;
// The hubs settle (heartbeats, the last writes) before the CPU is read.
await new Promise((resolve) => setTimeout(resolve, 500));
const joinCpu = cpuMs() - cpu;

cpu = cpuMs();
started = performance.now();
for (const socket of sockets) socket.close();
await until(() => closed === count);
const closedMs = performance.now() - started;
await until(() => !watching || leaves === count);
const leftMs = performance.now() - started;
await new Promise((resolve) => setTimeout(resolve, 500));
const leaveCpu = cpuMs() - cpu;
watcher.close();
console.log(JSON.stringify({
  presence: watching, members: count, subscribed_ms: Math.round(subscribedMs), joins_told_ms: Math.round(joinedMs),
  joins, join_cpu_ms: joinCpu, closed_ms: Math.round(closedMs), leaves_told_ms: Math.round(leftMs), leaves,
  leave_cpu_ms: leaveCpu,
}));
process.exit(0);
