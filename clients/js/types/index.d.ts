export { Cursor } from "./cursor.js";
export { backoffDelay } from "./backoff.js";
export { HubClient, HubError } from "./client.js";
