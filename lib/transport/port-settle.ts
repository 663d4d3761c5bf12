/**
 * One rule for a device port that went down (docs/protocol.md §10, "Port
 * events"): the transport uses it again (sends a held-back disconnect,
 * reconnects a path over it) only once it has been ACTIVE for a settle
 * time. On rxe a connect, or a DREQ, sent while the link is down or in the
 * first moments after it came back (addresses and GIDs still being
 * restored) can leave the device's CM or the route unusable for a long time.
 */

/** Default settle time (ms): the client's `portSettleMs`, and the connections' held-back disconnects. */
export const PORT_SETTLE_MS = 2000;

/** Watches one port's state readings: settled once ACTIVE for settleMs without a break. */
export class PortSettle {
  readonly settleMs: number;
  #activeSince: number | undefined;

  constructor(settleMs: number = PORT_SETTLE_MS) {
    this.settleMs = settleMs;
  }

  /** Feeds one reading of the port's state; true once it has been ACTIVE for settleMs. */
  observe(state: string, now: number = Date.now()): boolean {
    if (state !== 'ACTIVE') {
      this.#activeSince = undefined;
      return false;
    }
    this.#activeSince ??= now;
    return now - this.#activeSince >= this.settleMs;
  }
}
