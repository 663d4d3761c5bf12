/** Argument checks shared by the verbs classes: errors name the argument. */

export function checkUint(value: unknown, name: string, max = 0xffffffff, min = 0): number {
  if (typeof value !== 'number') throw new TypeError(`${name} must be a number, got ${typeof value}`);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${name} must be an integer from ${min} to ${max}, got ${value}`);
  }
  return value;
}

export function checkObject<T extends object>(value: unknown, name: string): T {
  if (typeof value !== 'object' || value === null) throw new TypeError(`${name} must be an object`);
  return value as T;
}

/** An optional options object: undefined is {}, anything but an object is a TypeError. */
export function checkOptions<T extends object>(value: T | undefined, name = 'options'): T {
  if (value === undefined) return {} as T;
  if (typeof value !== 'object' || value === null) throw new TypeError(`${name} must be an object`);
  return value;
}

export function checkInstance<T>(value: unknown, ctor: abstract new (...args: never[]) => T, name: string): T {
  if (!(value instanceof ctor)) throw new TypeError(`${name} must be a ${ctor.name}`);
  return value;
}

export function checkBytes(value: unknown, name: string): ArrayBuffer | ArrayBufferView {
  if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) return value;
  throw new TypeError(`${name} must be an ArrayBuffer, TypedArray, DataView or Buffer`);
}

/** Optional option checks: undefined passes (the default applies). */
export function optUint(value: unknown, name: string, max = Number.MAX_SAFE_INTEGER, min = 0): void {
  if (value !== undefined) checkUint(value, name, max, min);
}

export function optBool(value: unknown, name: string): void {
  if (value !== undefined && typeof value !== 'boolean') throw new TypeError(`${name} must be a boolean`);
}

export function optFunction(value: unknown, name: string): void {
  if (value !== undefined && typeof value !== 'function') throw new TypeError(`${name} must be a function`);
}

export function optString(value: unknown, name: string): void {
  if (value !== undefined && typeof value !== 'string') throw new TypeError(`${name} must be a string`);
}
