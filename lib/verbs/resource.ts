/**
 * The lifetime rules shared by every verbs object: idempotent close(),
 * Symbol.dispose, children closed before their parent, a clear ECLOSED error
 * on use after close.
 */
import { closedError } from '../errors';

export abstract class Resource {
  #closed = false;
  #children = new Set<Resource>();
  #parent: Resource | undefined;

  protected constructor(parent?: Resource) {
    this.#parent = parent;
    if (parent) parent.#children.add(this);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Throws ECLOSED when this object (or its parent) was closed. */
  protected assertOpen(what = this.constructor.name): void {
    if (this.#closed) throw closedError(what);
  }

  /** Makes `child` (created without a parent) close with this object. */
  protected adopt(child: Resource): void {
    if (child.#parent) child.#parent.#children.delete(child);
    child.#parent = this;
    this.#children.add(child);
  }

  /** Closes the children (newest first), then this object. Idempotent. */
  close(): void {
    if (this.#closed) return;
    const errors: unknown[] = [];
    for (const child of [...this.#children].reverse()) {
      try {
        child.close();
      } catch (err) {
        errors.push(err);
      }
    }
    this.#closed = true;
    if (this.#parent) this.#parent.#children.delete(this);
    try {
      this.release();
    } catch (err) {
      errors.push(err);
    }
    if (errors.length) throw errors[0];
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** Frees the native object; called once, after the children are closed. */
  protected abstract release(): void;
}
