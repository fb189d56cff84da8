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
export function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;
export type BackoffOptions = {
    /**
     * the first cap, in milliseconds (default 250)
     */
    initialMs?: number | undefined;
    /**
     * the largest cap (default 30000)
     */
    maxMs?: number | undefined;
};
