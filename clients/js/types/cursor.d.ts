export class Cursor {
    /**
     * @param {number | undefined} since where to start: undefined for "live from now"
     * @param {number} [capacity] how many recent ids to remember
     */
    constructor(since: number | undefined, capacity?: number);
    /** @type {number | undefined} the newest id applied (or position given by the hub) */
    lastId: number | undefined;
    /** @private @type {Set<number>} */
    private recent;
    /** @private */
    private capacity;
    /**
     * Whether the event with `id` is new; if so it becomes the position.
     * @param {number} id
     * @returns {boolean}
     */
    accept(id: number): boolean;
    /**
     * The hub said where the subscription stands (`subscribed.head` for a live-only start, a reset's position):
     * moves forward only.
     * @param {number} position
     */
    advanceTo(position: number): void;
}
