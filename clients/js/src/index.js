// The realtime hub's JavaScript client. See README.md.
export { HubClient, HubError } from './client.js';
export { Cursor } from './cursor.js';
export { backoffDelay } from './backoff.js';
