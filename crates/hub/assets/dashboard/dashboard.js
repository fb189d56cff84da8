// The staff dashboard: one subscription to everything the hub retains, built on the hub's JavaScript client (served
// from /dashboard/client/). The client resumes after drops, falls back to SSE and long-poll, and applies each event
// once; on a reset the page rebuilds its state from the retained history.
import { HubClient } from './client/index.js';

const params = new URLSearchParams(location.search);
const token = params.get('token') ?? localStorage.getItem('hubToken') ?? undefined;
// A token source (`?tokenUrl=`), as an OIDC front end provides: a URL that answers a fresh token (the token as text,
// or `{"token": …}`), asked for each connection and ahead of each expiry, so the page stays on short-lived tokens.
const tokenUrl = params.get('tokenUrl') ?? undefined;
const transports = params.get('transports')?.split(',');

async function getToken() {
  if (!tokenUrl) return token;
  const response = await fetch(tokenUrl, { credentials: 'include', cache: 'no-store' });
  if (!response.ok) throw new Error(`the token source answered ${response.status}`);
  const text = (await response.text()).trim();
  return text.startsWith('{') ? JSON.parse(text).token : text;
}

const hub = new HubClient({
  url: location.origin,
  getToken,
  transports,
  backoff: { initialMs: 200, maxMs: 5000 },
  // A staff page on a fallback tries WebSocket again soon: the proxy that blocked it may have been restarted.
  returnProbe: { initialMs: 1000, maxMs: 60000 },
});

const $ = (id) => document.getElementById(id);
const escape = (text) => String(text ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const time = (ts) => (ts ? new Date(ts).toLocaleTimeString() : '');

let state;
let selectedRun;
let unsubscribe;
let scheduled = false;
/** The selected run's log: the last LOG_TAIL lines, then live (a subscription of its own). */
const LOG_TAIL = 500;
let logRun;
let unsubscribeLog;
let unsubscribeTrail;

function emptyState() {
  return { runs: new Map(), logs: new Map(), deploys: new Map(), alerts: [], flags: new Map(), trail: [], applied: 0, lastId: undefined };
}

/** Applies one event to the page's state. */
function apply(data, event) {
  state.applied += 1;
  state.lastId = event.id;
  const scope = event.scope ?? {};
  switch (event.topic) {
    case 'run.events': {
      const run = state.runs.get(scope.run_id) ?? { id: scope.run_id, project: scope.project_id };
      Object.assign(run, { status: data.status, step: data.step ?? run.step, updated: event.ts });
      state.runs.set(run.id, run);
      break;
    }
    case 'run.logs': {
      // From the selected run's own subscription (the tail of its log, then live).
      const log = state.logs.get(scope.run_id) ?? { chunks: new Map(), eos: false };
      log.chunks.set(event.seq ?? log.chunks.size + 1, String(data.chunk ?? ''));
      log.eos ||= Boolean(data.eos);
      state.logs.set(scope.run_id, log);
      break;
    }
    case 'deploy.events':
      state.deploys.set(scope.deploy_id, { id: scope.deploy_id, project: scope.project_id, status: data.status, updated: event.ts });
      break;
    case 'system.errors':
      state.alerts.unshift({ source: data.source, message: data.message, code: data.code, ts: event.ts });
      state.alerts.length = Math.min(state.alerts.length, 50);
      break;
    case 'hub.admin':
      state.trail.unshift({ ...data, ts: event.ts });
      state.trail.length = Math.min(state.trail.length, 50);
      break;
    default:
      if (event.topic.startsWith('flags.')) applyFlag(data, event);
  }
  render();
}

/** The feature-flag service's changes (database source): feature_updated, feature_deleted, pending_change_created. */
function applyFlag(data, event) {
  const key = `${data.project_id}/${data.environment}/${data.entity_id}`;
  const flag = state.flags.get(key) ?? { id: data.entity_id, project: data.project_id, env: data.environment, pending: 0 };
  if (data.type === 'pending_change_created') flag.pending += 1;
  else if (data.type === 'feature_deleted') Object.assign(flag, { action: 'deleted', updated: data.timestamp ?? event.ts });
  else if (data.type?.startsWith('feature_')) Object.assign(flag, { action: data.action, updated: data.timestamp ?? event.ts });
  state.flags.set(key, flag);
}

function render() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    draw();
  });
}

function draw() {
  const runs = [...state.runs.values()].sort((a, b) => String(b.updated).localeCompare(String(a.updated)));
  // The log panel follows the runs that exist: the newest one until a row is picked, and again when the picked run
  // is gone (a reset rebuilt the state without it).
  if (!state.runs.has(selectedRun)) selectedRun = runs[0]?.id;
  followLog(selectedRun);
  $('runs').innerHTML = runs.length
    ? runs.map((r) => `<tr data-run="${escape(r.id)}" class="${r.id === selectedRun ? 'selected' : ''}"><td>${escape(r.id)}</td>` +
        `<td>${escape(r.project)}</td><td><span class="badge ${escape(r.status)}">${escape(r.status)}</span></td>` +
        `<td>${escape(r.step)}</td><td>${time(r.updated)}</td></tr>`).join('')
    : '<tr class="empty"><td colspan="5">no runs yet</td></tr>';
  const log = state.logs.get(selectedRun);
  $('log-run').textContent = selectedRun ?? 'select a run';
  const chunks = log ? [...log.chunks.entries()].sort(([a], [b]) => a - b).map(([, c]) => c).join('') : '';
  const pre = $('log');
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.textContent = chunks || (selectedRun ? 'no log lines yet' : '');
  if (atBottom) pre.scrollTop = pre.scrollHeight;
  $('log-eos').hidden = !log?.eos;
  const deploys = [...state.deploys.values()].sort((a, b) => String(b.updated).localeCompare(String(a.updated)));
  $('deploys').innerHTML = deploys.length
    ? deploys.map((d) => `<li><span>${escape(d.id)}</span><span class="badge ${escape(d.status)}">${escape(d.status)}</span>` +
        `<span class="muted">${escape(d.project)}</span><span class="when">${time(d.updated)}</span></li>`).join('')
    : '<li class="empty">no deploys yet</li>';
  $('alerts').innerHTML = state.alerts.length
    ? state.alerts.map((a) => `<li><span class="source">${escape(a.source)}</span><span>${escape(a.message)}</span>` +
        `<span class="when">${time(a.ts)}</span></li>`).join('')
    : '<li class="empty">no alerts</li>';
  const flags = [...state.flags.values()];
  $('flags').innerHTML = flags.length
    ? flags.map((f) => `<tr data-flag="${escape(f.id)}"><td>${escape(f.id)}</td><td>${escape(f.project)}</td><td>${escape(f.env)}</td>` +
        `<td><span class="badge ${escape(f.action)}">${escape(f.action ?? '–')}</span> ${time(f.updated)}</td>` +
        `<td>${f.pending ? `<span class="badge pending">${f.pending} pending</span>` : ''}</td></tr>`).join('')
    : '<tr class="empty"><td colspan="5">no flag changes yet</td></tr>';
  $('ops-trail').innerHTML = state.trail.length
    ? state.trail.map((t) => `<li><span class="badge ${t.action === 'revoke' ? 'failed' : 'pending'}">${escape(t.action)}</span>` +
        `<span>${escape(describeTarget(t.target))}</span><span class="muted">by ${escape(t.by ?? 'development mode')} · ` +
        `${escape(t.connections)} connection(s) on ${escape((t.hubs ?? []).join(', '))}</span><span class="when">${time(t.ts)}</span></li>`).join('')
    : '<li class="empty">no operator actions yet</li>';
  $('applied').textContent = String(state.applied);
  $('last-id').textContent = state.lastId === undefined ? '–' : String(state.lastId);
  $('transport').textContent = hub.transport;
}

/** (Re)builds the state from everything the hub retains, then follows live (run logs: see followLog). */
function load() {
  unsubscribe?.();
  unsubscribeLog?.();
  unsubscribeTrail?.();
  unsubscribeLog = unsubscribeTrail = undefined;
  logRun = undefined;
  state = emptyState();
  render();
  const reload = () => {
    $('reset').hidden = false;
    load();
  };
  unsubscribe = hub.subscribe(['run.events', 'deploy.*', 'system.*', 'flags.*'], apply, { since: 0, onReset: reload });
}

/**
 * The log panel's run: its last LOG_TAIL log lines, then live, in a subscription of their own, moved when another
 * run is selected (the page never loads every run's whole log).
 */
function followLog(runId) {
  if (runId === logRun) return;
  unsubscribeLog?.();
  unsubscribeLog = undefined;
  logRun = runId;
  if (runId === undefined) return;
  state.logs.delete(runId);
  unsubscribeLog = hub.subscribe('run.logs', apply, { filter: { run_id: runId }, tail: LOG_TAIL, onReset: () => load() });
}

hub.on('state', (connection) => {
  $('connection').dataset.state = connection;
  $('connection-text').textContent = connection === 'degraded' ? 'live (fallback)' : connection;
  $('degraded').hidden = connection !== 'degraded';
  document.body.dataset.connection = connection;
  render();
});
$('runs').addEventListener('click', (event) => {
  const row = event.target.closest('tr[data-run]');
  if (row) {
    selectedRun = row.dataset.run;
    render();
  }
});
hub.on('revoked', () => {
  $('revoked').hidden = false;
  // The page's token no longer opens anything: what the operations panel showed is stale.
  $('ops').hidden = true;
  document.body.dataset.revoked = 'true';
});

// ---- Operations: shown to admin tokens only (the hub answers /api/admin/* to them and 403 to any other). ----

/** A call to the hub's admin API with the page's token. */
async function admin(path, init = {}) {
  const current = await getToken();
  const headers = { 'content-type': 'application/json', ...(current ? { authorization: `Bearer ${current}` } : {}) };
  return fetch(`${location.origin}${path}`, { ...init, headers });
}

function describeTarget(target) {
  if (!target) return '';
  if (target.subject !== undefined && typeof target.subject === 'string') return `subject ${target.subject}`;
  if (target.connection) return `connection ${target.connection}`;
  if (target.key) return `revocation ${target.key}`;
  if (target.jti) return `token ${target.jti}`;
  return JSON.stringify(target);
}

let connections = [];

async function refreshConnections() {
  const query = new URLSearchParams();
  if ($('ops-subject').value.trim()) query.set('subject', $('ops-subject').value.trim());
  if ($('ops-topic').value.trim()) query.set('topic', $('ops-topic').value.trim());
  const response = await admin(`/api/admin/connections?${query}`).catch(() => undefined);
  if (!response || response.status === 403 || response.status === 401) {
    $('ops').hidden = true;
    return false;
  }
  if (!response.ok) return true;
  const listing = await response.json();
  connections = listing.connections;
  $('ops').hidden = false;
  // The audit trail: operators' changes, recorded on hub.admin, which an admin token may read.
  unsubscribeTrail ??= hub.subscribe('hub.admin', apply, { since: 0 });
  $('ops-summary').textContent = `${connections.length} connection(s) on ${listing.hubs.join(', ')}` +
    (listing.missing.length ? ` · not answering: ${listing.missing.join(', ')}` : '');
  $('ops-connections').innerHTML = connections.length
    ? connections.map((c) => `<tr data-connection="${escape(c.id)}"><td>${escape(c.subject ?? '(none)')}</td><td>${escape(c.node)}</td>` +
        `<td>${escape(c.transport)}</td><td>${escape(c.subscriptions.map((s) => s.topics.join(',')).join(' · '))}</td>` +
        `<td>${time(c.since)}</td><td>${escape(c.peer)}</td><td>${escape(c.unsent_bytes)}</td><td>` +
        (c.subject ? `<button data-action="disconnect" data-subject="${escape(c.subject)}">Disconnect</button>` +
          `<button class="danger" data-action="revoke" data-subject="${escape(c.subject)}">Revoke</button>` : '') +
        '</td></tr>').join('')
    : '<tr class="empty"><td colspan="8">no connections</td></tr>';
  return true;
}

$('ops-connections').addEventListener('click', async (event) => {
  const button = event.target.closest('button[data-action]');
  if (!button) return;
  const { action, subject } = button.dataset;
  const question = action === 'revoke'
    ? `Revoke ${subject}? Every hub closes their connections and refuses their current tokens (for 24 h by default).`
    : `Disconnect every connection of ${subject}? They may reconnect with a fresh token.`;
  if (!window.confirm(question)) return;
  const response = await admin(`/api/admin/${action}`, { method: 'POST', body: JSON.stringify({ subject }) });
  const answer = await response.json().catch(() => ({}));
  $('ops-message').textContent = response.ok
    ? `${action === 'revoke' ? 'Revoked' : 'Disconnected'} ${subject}: ${answer.closed} connection(s) closed`
    : `${action} failed: ${answer.error?.message ?? response.status}`;
  refreshConnections();
});
for (const id of ['ops-subject', 'ops-topic']) $(id).addEventListener('input', () => refreshConnections());

async function followConnections() {
  if (document.body.dataset.revoked === 'true') return;
  const isAdmin = await refreshConnections();
  if (isAdmin) setTimeout(followConnections, 2000);
}

window.hubDashboard = { hub, get state() { return state; } };
load();
followConnections();
