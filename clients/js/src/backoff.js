// Reconnect delays: exponential backoff with full jitter (a uniform draw between 0 and the capped exponential), so
// thousands of clients cut by the same restart do not come back in the same millisecond.

/**
 * @typedef {object} BackoffOptions
 * @property {number} [initialMs] the first cap, in milliseconds (default 250)
 * @property {number} [maxMs] the largest cap (default 30000)
 */

/**
 * The delay before reconnect attempt `attempt` (0 for the first).
 * @param {number} attempt
 * @param {BackoffOptions} [options]
 * @param {() => number} [random] a uniform draw in [0, 1)
 * @returns {number} milliseconds, in [0, min(maxMs, initialMs * 2^attempt)]
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
  const initial = options.initialMs ?? 250;
  const max = options.maxMs ?? 30000;
  const cap = Math.min(max, initial * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * (cap + 1));
}
