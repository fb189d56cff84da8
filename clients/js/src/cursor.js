// One subscription's position, shared by every transport: an event is applied only if its id is above everything
// applied before, so switching between WebSocket, SSE and long-poll never applies an event twice or skips one.
// A bounded set of recent ids guards handlers against the same id twice even when positions are moved by hand.

export class Cursor {
  /**
   * @param {number | undefined} since where to start: undefined for "live from now"
   * @param {number} [capacity] how many recent ids to remember
   */
  constructor(since, capacity = 10000) {
    /** @type {number | undefined} the newest id applied (or position given by the hub) */
    this.lastId = since;
    /** @private @type {Set<number>} */
    this.recent = new Set();
    /** @private */
    this.capacity = capacity;
  }

  /**
   * Whether the event with `id` is new; if so it becomes the position.
   * @param {number} id
   * @returns {boolean}
   */
  accept(id) {
    if ((this.lastId !== undefined && id <= this.lastId) || this.recent.has(id)) {
      return false;
    }
    this.recent.add(id);
    if (this.recent.size > this.capacity) {
      // Sets iterate in insertion order: the first is the oldest.
      const oldest = this.recent.values().next().value;
      if (oldest !== undefined) this.recent.delete(oldest);
    }
    this.lastId = id;
    return true;
  }

  /**
   * The hub said where the subscription stands (`subscribed.head` for a live-only start, a reset's position):
   * moves forward only.
   * @param {number} position
   */
  advanceTo(position) {
    if (this.lastId === undefined || position > this.lastId) this.lastId = position;
  }
}
