/**
 * The lifetime rules shared by every verbs object: idempotent close(),
 * Symbol.dispose, children closed before their parents, a clear ECLOSED
 * error on use after close. A child may have several parents (a QP depends
 * on its PD and on its CQs): closing any of them closes it first.
 */
import { closedError } from '../errors';

export abstract class Resource {
  #closed = false;
  #children = new Set<Resource>();
  #parents = new Set<Resource>();

  protected constructor(parent?: Resource) {
    if (parent) this.dependOn(parent);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Throws ECLOSED when this object was closed. */
  protected assertOpen(what?: string): void {
    // the class name only when it is needed: every post and poll checks,
    // and `constructor.name` is a getter call (a tenth of a spinning poll)
    if (this.#closed) throw closedError(what ?? this.constructor.name);
  }

  /** This object is closed before any of `parents` is. */
  protected dependOn(...parents: Array<Resource | undefined>): void {
    for (const p of parents) {
      if (!p) continue;
      p.assertOpen();
      p.#children.add(this);
      this.#parents.add(p);
    }
  }

  /** Makes `child` (created without a parent) close with this object. */
  protected adopt(child: Resource): void {
    child.dependOn(this);
  }

  /**
   * Closes the children (newest first), then this object. Idempotent. When
   * a child fails to close, this object stays open (the child still uses
   * it: releasing it would fail, or leave the child on freed ground) and
   * the child's error is thrown once every other child was tried.
   */
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
    if (errors.length) throw errors[0];
    this.#closed = true;
    try {
      this.release();
    } catch (err) {
      // the native object is still there (e.g. EBUSY): stay open, so that
      // the caller can close what holds it and retry
      this.#closed = false;
      throw err;
    }
    for (const p of this.#parents) p.#children.delete(this);
    this.#parents.clear();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** Frees the native object; called once, after the children are closed. */
  protected abstract release(): void;
}
