/**
 * rdma_cm connections. One event channel serves every CmId of the process;
 * it keeps the process alive only while an id waits for something (address
 * or route resolution, a connect or accept in flight) or listens.
 *
 *   const id = CmId.create();
 *   await id.resolveAddr('10.99.1.1', 7471);
 *   await id.resolveRoute();
 *   const pd = id.device.allocPd(); ...
 *   id.createQueuePair(pd, { sendCq, recvCq });
 *   const { privateData } = await id.connect({ privateData: hello });
 */
import { EventEmitter } from 'events';
import { constants as osConstants } from 'os';
import { ErrnoCode, RdmaError } from '../errors';
import { native } from '../native';
import { checkOptions, checkUint } from './args';
import { Device, openDevice } from './device';
import { AhAttr, QueuePair, QueuePairInit } from './qp';
import { Resource } from './resource';
import type { ProtectionDomain } from './pd';
import type { CmIdEvents } from './events';

export interface ConnParam {
  /** At most 56 bytes for connect and 196 for accept on RoCE/IB (the CM's limits). */
  privateData?: Uint8Array;
  responderResources?: number;
  initiatorDepth?: number;
  retryCount?: number;
  rnrRetryCount?: number;
}

export interface CmAddress {
  host: string;
  port: number;
}

export interface CmInfo {
  local: CmAddress | null;
  peer: CmAddress | null;
  portNum: number;
  device: string | null;
  qpNum: number | null;
}

/**
 * A UD peer as rdma_cm resolved it (rdma_ud_param, on a UDP id's ESTABLISHED):
 * create an AddressHandle from `ahAttr` and send with
 * `ud: { ah, remoteQpn: qpNum, remoteQkey: qkey }`.
 */
export interface UdPeer {
  qpNum: number;
  qkey: number;
  ahAttr: AhAttr;
}

interface NativeCmEvent {
  type: string;
  status: number;
  id: any;
  listenId?: any;
  privateData: Buffer;
  ud?: UdPeer;
}

const ERRNO_NAMES = new Map<number, ErrnoCode>(
  Object.entries(osConstants.errno).map(([name, num]) => [num as number, name as ErrnoCode]),
);

/** An RdmaError from a CM event's (negative errno) status. */
function cmError(verb: string, status: number, what: string, fallback: keyof typeof osConstants.errno = 'ECONNABORTED'): RdmaError {
  const errno = status < 0 ? -status : status > 0 ? status : osConstants.errno[fallback];
  const code = ERRNO_NAMES.get(errno) ?? fallback;
  return new RdmaError(`${verb} failed: ${code}: ${what}`, code, errno, verb);
}

/**
 * Private data limits of the IB CM (RoCE uses the same): REQ 92 bytes, REP
 * 196, REJ 148, less the 36 bytes rdma_cm keeps of the REQ for its own
 * header: 56 for connect.
 */
export const CONNECT_PRIVATE_DATA_MAX = 56;
export const ACCEPT_PRIVATE_DATA_MAX = 196;
export const REJECT_PRIVATE_DATA_MAX = 148;

function checkPrivateData(param: ConnParam, max: number): void {
  checkOptions(param, 'param');
  const d = param.privateData;
  if (d === undefined || d === null) return;
  if (!(d instanceof Uint8Array)) throw new TypeError('privateData must be a Buffer or Uint8Array');
  if (d.length > max) throw new RangeError(`privateData must be at most ${max} bytes here, got ${d.length}`);
}

type Pending = { resolve: (v: any) => void; reject: (e: Error) => void; verb: string; held: boolean };

class Channel {
  readonly handle: any;
  readonly ids = new WeakMap<object, CmId>();
  #waiting = 0;

  constructor() {
    this.handle = new (native().CmEventChannel)();
    this.handle.start((ev: NativeCmEvent) => this.#dispatch(ev));
  }

  hold(delta: number): void {
    this.#waiting += delta;
    if (this.#waiting > 0) this.handle.ref();
    else this.handle.unref();
  }

  #dispatch(ev: NativeCmEvent): void {
    if (ev.type === 'CONNECT_REQUEST') {
      const listener = ev.listenId ? this.ids.get(ev.listenId) : undefined;
      const id = new CmId(ev.id);
      if (!listener || listener.closed) {
        id.reject();
        id.close();
        return;
      }
      listener.emitConnection(id, ev.privateData);
      return;
    }
    const id = ev.id ? this.ids.get(ev.id) : undefined;
    if (id) id.handleEvent(ev);
  }
}

let channel: Channel | undefined;
function sharedChannel(): Channel {
  channel ??= new Channel();
  return channel;
}

export class CmId extends Resource {
  /** @internal */
  readonly handle: any;
  readonly #events = new EventEmitter();
  readonly #pending = new Map<string, Pending>();
  #listening = false;
  #disconnecting = false;
  #device: Device | undefined;
  #qp: QueuePair | undefined;

  /** A new id (rdma_create_id) in the TCP (RC) or UDP (UD) port space. */
  static create(portSpace: 'TCP' | 'UDP' = 'TCP'): CmId {
    if (portSpace !== 'TCP' && portSpace !== 'UDP') throw new TypeError("portSpace must be 'TCP' or 'UDP'");
    const ch = sharedChannel();
    return new CmId(new (native().CmId)(ch.handle, portSpace));
  }

  /** @internal */
  constructor(handle: any) {
    super();
    this.handle = handle;
    sharedChannel().ids.set(handle, this);
  }

  /** The events of CmIdEvents: `id.on('connection', (child, privateData) => ...)`. */
  on<K extends keyof CmIdEvents>(event: K, listener: (...args: CmIdEvents[K]) => void): this {
    this.#events.on(event, listener as (...args: unknown[]) => void);
    return this;
  }

  once<K extends keyof CmIdEvents>(event: K, listener: (...args: CmIdEvents[K]) => void): this {
    this.#events.once(event, listener as (...args: unknown[]) => void);
    return this;
  }

  off<K extends keyof CmIdEvents>(event: K, listener: (...args: CmIdEvents[K]) => void): this {
    this.#events.off(event, listener as (...args: unknown[]) => void);
    return this;
  }

  /** rdma_resolve_addr: resolves once ADDR_RESOLVED arrives. */
  resolveAddr(host: string, port: number, options: { source?: string; timeoutMs?: number } = {}): Promise<void> {
    this.assertOpen();
    if (typeof host !== 'string') throw new TypeError('host must be a string');
    checkUint(port, 'port', 65535);
    checkOptions(options);
    const tmo = checkUint(options.timeoutMs ?? 2000, 'timeoutMs', 0x7fffffff, 1);
    return this.#wait('addr', 'rdma_resolve_addr', () => this.handle.resolveAddr(options.source ?? null, host, port, tmo));
  }

  /** rdma_resolve_route: resolves once ROUTE_RESOLVED arrives. */
  resolveRoute(timeoutMs = 2000): Promise<void> {
    this.assertOpen();
    const tmo = checkUint(timeoutMs, 'timeoutMs', 0x7fffffff, 1);
    return this.#wait('route', 'rdma_resolve_route', () => this.handle.resolveRoute(tmo));
  }

  /** The device this id is bound to (after resolveAddr, bind or a connect request). */
  get device(): Device {
    this.assertOpen();
    if (!this.#device || this.#device.closed) {
      const name = this.info().device;
      if (!name) throw new RdmaError('CmId has no device yet: resolve an address or bind first', 'ENODEV');
      this.#device = openDevice(name);
      this.adopt(this.#device);
    }
    return this.#device;
  }

  /** rdma_create_qp: a QP that rdma_cm moves through its states. */
  createQueuePair(pd: ProtectionDomain, init: QueuePairInit): QueuePair {
    this.assertOpen();
    if (this.#qp && !this.#qp.closed) throw new RdmaError('this CmId already has a queue pair', 'EEXIST');
    this.#qp = new QueuePair(pd, init, this.handle);
    return this.#qp;
  }

  get queuePair(): QueuePair | undefined {
    return this.#qp && !this.#qp.closed ? this.#qp : undefined;
  }

  /**
   * rdma_connect: resolves with the peer's accept private data once
   * ESTABLISHED; on a UDP id also with the peer's UD address (`ud`).
   */
  connect(param: ConnParam = {}): Promise<{ privateData: Buffer; ud?: UdPeer }> {
    this.assertOpen();
    checkPrivateData(param, CONNECT_PRIVATE_DATA_MAX);
    return this.#wait('connect', 'rdma_connect', () => this.handle.connect(param));
  }

  /** rdma_bind_addr + rdma_listen: emits 'connection' (id, privateData) per request. */
  listen(host: string, port: number, backlog = 128): void {
    this.assertOpen();
    if (typeof host !== 'string') throw new TypeError('host must be a string');
    checkUint(port, 'port', 65535);
    this.handle.bindAddr(host, port);
    this.handle.listen(checkUint(backlog, 'backlog', 0x7fffffff));
    if (!this.#listening) sharedChannel().hold(1);
    this.#listening = true;
  }

  /** rdma_accept (on an id from 'connection'): resolves once ESTABLISHED. */
  accept(param: ConnParam = {}): Promise<void> {
    this.assertOpen();
    checkPrivateData(param, ACCEPT_PRIVATE_DATA_MAX);
    if (this.handle.portSpace === 'UDP') {
      // UD: rdma_accept answers the peer's SIDR request, and the passive
      // side gets no ESTABLISHED: it is ready once the answer is sent
      this.handle.accept(param);
      return Promise.resolve();
    }
    // passive: the listener (or its owner) keeps the process alive, a
    // peer that vanishes mid-handshake must not
    return this.#wait('connect', 'rdma_accept', () => this.handle.accept(param), false);
  }

  /** rdma_reject with optional private data for the peer. */
  reject(privateData?: Uint8Array): void {
    this.assertOpen();
    checkPrivateData({ privateData }, REJECT_PRIVATE_DATA_MAX);
    this.handle.reject(privateData);
  }

  /** rdma_disconnect; 'disconnected' follows on both sides. */
  disconnect(): void {
    this.assertOpen();
    this.#disconnecting = true;
    this.handle.disconnect();
  }

  info(): CmInfo {
    this.assertOpen();
    return this.handle.info();
  }

  /** @internal */
  emitConnection(id: CmId, privateData: Buffer): void {
    if (this.#events.listenerCount('connection') === 0) {
      id.reject();
      id.close();
      return;
    }
    this.#events.emit('connection', id, privateData);
  }

  /** @internal */
  handleEvent(ev: NativeCmEvent): void {
    switch (ev.type) {
      case 'ADDR_RESOLVED': this.#settle('addr', undefined); break;
      case 'ADDR_ERROR': this.#fail('addr', cmError('rdma_resolve_addr', ev.status, 'address resolution failed', 'EHOSTUNREACH')); break;
      case 'ROUTE_RESOLVED': this.#settle('route', undefined); break;
      case 'ROUTE_ERROR': this.#fail('route', cmError('rdma_resolve_route', ev.status, 'route resolution failed', 'ENETUNREACH')); break;
      case 'ESTABLISHED':
        this.#settle('connect', ev.ud ? { privateData: ev.privateData, ud: ev.ud } : { privateData: ev.privateData });
        this.#events.emit('established');
        break;
      case 'REJECTED': {
        const err = new RdmaError('rdma_connect failed: ECONNREFUSED: the peer rejected the connection',
          'ECONNREFUSED', osConstants.errno.ECONNREFUSED, 'rdma_connect') as RdmaError & { privateData: Buffer; status: number };
        err.privateData = ev.privateData;
        err.status = ev.status;
        this.#fail('connect', err);
        this.#events.emit('rejected', ev.privateData);
        break;
      }
      case 'UNREACHABLE':
      case 'CONNECT_ERROR':
        this.#fail('connect', cmError('rdma_connect', ev.status, `connection failed (${ev.type})`, 'ETIMEDOUT'));
        break;
      case 'DISCONNECTED':
        // answer the peer's DREQ at once: without our own rdma_disconnect
        // (DREP) the peer waits for the CM's DREQ timeout, over a minute
        if (!this.#disconnecting) {
          this.#disconnecting = true;
          try {
            this.handle.disconnect();
          } catch {
            // already torn down on our side: nothing to answer
          }
        }
        this.#fail('connect', cmError('rdma_connect', 0, 'disconnected before being established', 'ECONNRESET'));
        this.#events.emit('disconnected');
        break;
      case 'DEVICE_REMOVAL':
        for (const key of [...this.#pending.keys()]) this.#fail(key, cmError('rdma_cm', 0, 'device removed', 'ENODEV'));
        this.#events.emit('device-removal');
        break;
      case 'ADDR_CHANGE': this.#events.emit('addr-change'); break;
      case 'TIMEWAIT_EXIT': this.#events.emit('timewait-exit'); break;
      default: this.#events.emit('event', ev.type, ev.status);
    }
  }

  #wait<T>(key: string, verb: string, start: () => void, holdLoop = true): Promise<T> {
    if (this.#pending.has(key)) throw new RdmaError(`${verb} failed: EALREADY: already in progress`, 'EALREADY', osConstants.errno.EALREADY, verb);
    // a bad argument or a failing verb throws here, synchronously; the
    // event that settles the promise can only arrive from a later loop turn
    start();
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(key, { resolve, reject, verb, held: holdLoop });
      if (holdLoop) sharedChannel().hold(1);
    });
  }

  #settle(key: string, value: unknown): void {
    const p = this.#pending.get(key);
    if (!p) return;
    this.#pending.delete(key);
    if (p.held) sharedChannel().hold(-1);
    p.resolve(value);
  }

  #fail(key: string, err: Error): void {
    const p = this.#pending.get(key);
    if (!p) return;
    this.#pending.delete(key);
    if (p.held) sharedChannel().hold(-1);
    p.reject(err);
  }

  protected release(): void {
    for (const key of [...this.#pending.keys()]) {
      this.#fail(key, new RdmaError('CmId closed while waiting', 'ECLOSED'));
    }
    if (this.#listening) sharedChannel().hold(-1);
    this.#listening = false;
    this.#qp?.close();  // before rdma_destroy_id
    this.#events.removeAllListeners();
    this.handle.close();
  }
}
