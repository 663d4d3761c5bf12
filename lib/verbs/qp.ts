/**
 * Queue pairs and shared receive queues.
 */
import { native } from '../native';
import { checkObject, checkUint } from './args';
import { QpState, QpStateName, QpType, QpTypeName, SendFlags, WrOpcode, WrOpcodeName } from './constants';
import { CompletionQueue } from './cq';
import { MemoryRegion, MemoryWindow, Sge } from './memory';
import { checkListLength, postedBefore, toNativeRecvs } from './lists';
import { carriesImm, PreparedSend, targetsPeer } from './prepared';
import { Resource } from './resource';
import { SharedReceiveQueue } from './srq';
import type { ProtectionDomain } from './pd';

export { SharedReceiveQueue, SharedReceiveQueueInit } from './srq';

export interface QueuePairInit {
  type?: QpTypeName;
  sendCq: CompletionQueue;
  recvCq: CompletionQueue;
  srq?: SharedReceiveQueue;
  maxSendWr?: number;
  maxRecvWr?: number;
  maxSendSge?: number;
  maxRecvSge?: number;
  maxInlineData?: number;
  /** Signal every send WR (sq_sig_all). Default false. */
  sigAll?: boolean;
}

export interface Grh {
  dgid: string;
  sgidIndex?: number;
  hopLimit?: number;
  flowLabel?: number;
  trafficClass?: number;
}

export interface AhAttr {
  dlid?: number;
  sl?: number;
  srcPathBits?: number;
  staticRate?: number;
  portNum?: number;
  grh?: Grh;
}

/** ibv_modify_qp attributes; the mask is the set of keys given. */
export interface QpAttr {
  qpState?: QpStateName;
  curQpState?: QpStateName;
  pathMtu?: 256 | 512 | 1024 | 2048 | 4096;
  qkey?: number;
  rqPsn?: number;
  sqPsn?: number;
  destQpNum?: number;
  qpAccessFlags?: number;
  pkeyIndex?: number;
  portNum?: number;
  timeout?: number;
  retryCnt?: number;
  rnrRetry?: number;
  minRnrTimer?: number;
  maxRdAtomic?: number;
  maxDestRdAtomic?: number;
  ahAttr?: AhAttr;
  /** the alternate path for automatic path migration (IBV_QP_ALT_PATH: its four fields go together) */
  altPath?: AltPath;
  /** IBV_QP_PATH_MIG_STATE */
  pathMigState?: PathMigStateName;
  /** with qpState 'SQD': raise the QP's SQ_DRAINED event once its send queue has drained */
  enSqdAsyncNotify?: boolean;
  /** new queue sizes (IBV_QP_CAP; few devices can resize a QP) */
  cap?: QpCap;
  /** packet pacing in kbps (IBV_QP_RATE_LIMIT; raw packet QPs on devices that pace) */
  rateLimit?: number;
}

export interface AltPath {
  ahAttr: AhAttr;
  pkeyIndex: number;
  portNum: number;
  timeout: number;
}

export const PathMigState = { MIGRATED: 0, REARM: 1, ARMED: 2 } as const;
export type PathMigStateName = keyof typeof PathMigState;
const MIG_NAMES = Object.keys(PathMigState) as PathMigStateName[];

export interface QpCap { maxSendWr: number; maxRecvWr: number; maxSendSge: number; maxRecvSge: number; maxInlineData: number }

export interface QpQuery extends Omit<QpAttr, 'qpState' | 'curQpState' | 'pathMigState' | 'rateLimit'> {
  qpState: QpStateName;
  curQpState: QpStateName;
  pathMigState: PathMigStateName;
  altPath: AltPath;
  enSqdAsyncNotify: boolean;
  /** in SQD: whether the send queue is still draining */
  sqDraining: boolean;
  cap: QpCap;
  sigAll: boolean;
  type: number;
}

export interface SendWorkRequest {
  wrId?: number;
  opcode: WrOpcodeName;
  sge?: Sge[];
  /** Generate a completion (ignored when the QP signals all). Default true. */
  signaled?: boolean;
  inline?: boolean;
  fence?: boolean;
  solicited?: boolean;
  /** SEND_WITH_IMM / RDMA_WRITE_WITH_IMM: 32-bit immediate (host order). */
  imm?: number;
  /** SEND_WITH_INV / LOCAL_INV: the rkey to invalidate. */
  invalidateRkey?: number;
  /** RDMA and atomic operations: the peer's address and rkey. */
  remoteAddr?: number | bigint;
  rkey?: number;
  /** Atomics: the compare (CMP_AND_SWP) or add (FETCH_AND_ADD) operand. */
  compareAdd?: number | bigint;
  swap?: number | bigint;
  /** BIND_MW: bind a type-2 window onto [addr, addr + length) of a region. */
  bind?: {
    mw: MemoryWindow; mr: MemoryRegion; addr?: number; length?: number; access: number;
    /** The new rkey's low byte (default: the current one plus 1, ibv_inc_rkey). */
    keyByte?: number;
  };
  /** UD QPs: the destination (address handle, QP number, Q_Key). */
  ud?: { ah: AddressHandle; remoteQpn: number; remoteQkey: number };
}

export interface RecvWorkRequest {
  wrId?: number;
  sge?: Sge[];
}

const STATE_NAMES = Object.keys(QpState) as QpStateName[];

/** Layout of the packed fast path (native/qp.cc PostSendPacked). */
const PACKED_SGES = 4;
const SEND_STRIDE = 9 + 3 * PACKED_SGES;
const RECV_STRIDE = 5;
const NO_HANDLES: unknown[] = [];

/** Every QpAttr key and the largest value its verbs field holds. */
const ATTR_MAX: Record<string, number | 'state' | 'mtu' | 'ah' | 'alt' | 'mig' | 'bool' | 'cap'> = {
  qpState: 'state', curQpState: 'state', pathMtu: 'mtu', ahAttr: 'ah', altPath: 'alt', pathMigState: 'mig', enSqdAsyncNotify: 'bool', cap: 'cap',
  rateLimit: 0xffffffff,
  qkey: 0xffffffff, rqPsn: 0xffffff, sqPsn: 0xffffff, destQpNum: 0xffffff, qpAccessFlags: 0xffffffff,
  pkeyIndex: 0xffff, portNum: 255, timeout: 31, retryCnt: 7, rnrRetry: 7, minRnrTimer: 31,
  maxRdAtomic: 255, maxDestRdAtomic: 255,
};
const ALT_MAX: Record<string, number | 'ah'> = { ahAttr: 'ah', pkeyIndex: 0xffff, portNum: 255, timeout: 31 };
const CAP_MAX: Record<string, number> = { maxSendWr: 0xffffffff, maxRecvWr: 0xffffffff, maxSendSge: 0xffffffff, maxRecvSge: 0xffffffff, maxInlineData: 0xffffffff };
const AH_MAX: Record<string, number | 'grh'> = { dlid: 0xffff, sl: 15, srcPathBits: 127, staticRate: 255, portNum: 255, grh: 'grh' };
const GRH_MAX: Record<string, number | 'gid'> = { dgid: 'gid', sgidIndex: 255, hopLimit: 255, flowLabel: 0xfffff, trafficClass: 255 };

/**
 * A 64-bit WR field as a packed double: numbers as they are (the native side
 * checks them), bigints when exact in a double; -1 sends the WR down the
 * general path (which takes every bigint and produces the precise errors).
 */
function packable(v: number | bigint | undefined): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint' && v >= 0n && v <= 9007199254740991n) return Number(v);
  return -1;
}

/** A 64-bit field of a prepared send: a number or bigint below 2^53 (a packed record holds doubles). */
function checkU53(v: unknown, name: string): number {
  if (typeof v !== 'bigint') return checkUint(v, name, Number.MAX_SAFE_INTEGER);
  if (v < 0n || v > 9007199254740991n) throw new RangeError(`${name} must be from 0 to 2^53-1 to be prepared, got ${v}`);
  return Number(v);
}

/** Refuses unknown keys (a typo would be silently ignored) and values wider than their field. */
function checkFields(obj: Record<string, unknown>, table: Record<string, unknown>, where: string): void {
  for (const [key, value] of Object.entries(obj)) {
    const max = table[key];
    if (max === undefined) throw new TypeError(`${where} has no attribute '${key}' (known: ${Object.keys(table).join(', ')})`);
    if (value === undefined || typeof max !== 'number') continue;
    checkUint(value, `${where === 'attr' ? '' : `${where}.`}${key}`, max);
  }
}

function checkAhAttr(ah: AhAttr, where: string): void {
  checkFields(checkObject(ah, where) as Record<string, unknown>, AH_MAX, where);
  if (ah.grh !== undefined) checkFields(checkObject(ah.grh, 'grh') as Record<string, unknown>, GRH_MAX, 'grh');
}

function toNativeAttr(attr: QpAttr): Record<string, unknown> {
  checkObject(attr, 'attr');
  checkFields(attr as Record<string, unknown>, ATTR_MAX, 'attr');
  if (attr.ahAttr !== undefined) checkAhAttr(attr.ahAttr, 'ahAttr');
  const out: Record<string, unknown> = { ...attr };
  if (attr.altPath !== undefined) {
    checkFields(checkObject(attr.altPath, 'altPath') as Record<string, unknown>, ALT_MAX, 'altPath');
    for (const k of ['pkeyIndex', 'portNum', 'timeout'] as const) if (attr.altPath[k] === undefined) throw new TypeError(`altPath.${k} is required`);
    checkAhAttr(attr.altPath.ahAttr, 'altPath.ahAttr');
  }
  if (attr.pathMigState !== undefined) {
    const v = PathMigState[attr.pathMigState];
    if (v === undefined) throw new TypeError(`pathMigState must be one of ${MIG_NAMES.join(', ')}`);
    out.pathMigState = v;
  }
  if (attr.enSqdAsyncNotify !== undefined && typeof attr.enSqdAsyncNotify !== 'boolean') throw new TypeError('enSqdAsyncNotify must be a boolean');
  if (attr.cap !== undefined) {
    checkFields(checkObject(attr.cap, 'cap') as Record<string, unknown>, CAP_MAX, 'cap');
    for (const k of Object.keys(CAP_MAX)) if ((attr.cap as unknown as Record<string, unknown>)[k] === undefined) throw new TypeError(`cap.${k} is required`);
  }
  for (const key of ['qpState', 'curQpState'] as const) {
    if (attr[key] === undefined) continue;
    const v = QpState[attr[key] as QpStateName];
    if (v === undefined) throw new TypeError(`${key} must be one of ${STATE_NAMES.join(', ')}`);
    out[key] = v;
  }
  return out;
}

function toNativeSend(wr: SendWorkRequest, sigAll: boolean): Record<string, unknown> {
  checkObject(wr, 'work request');
  const opcode = WrOpcode[wr.opcode];
  if (opcode === undefined) throw new TypeError(`opcode must be one of ${Object.keys(WrOpcode).join(', ')}, got ${String(wr.opcode)}`);
  let flags = 0;
  if (sigAll || wr.signaled !== false) flags |= SendFlags.SIGNALED;
  if (wr.inline) flags |= SendFlags.INLINE;
  if (wr.fence) flags |= SendFlags.FENCE;
  if (wr.solicited) flags |= SendFlags.SOLICITED;
  const out: Record<string, unknown> = {
    wrId: wr.wrId ?? 0,
    opcode,
    flags,
    sge: wr.sge,
    imm: wr.imm,
    invalidateRkey: wr.invalidateRkey,
    remoteAddr: wr.remoteAddr,
    rkey: wr.rkey,
    compareAdd: wr.compareAdd,
    swap: wr.swap,
  };
  if (wr.ud !== undefined) {
    const u = checkObject<NonNullable<SendWorkRequest['ud']>>(wr.ud, 'ud');
    if (!(u.ah instanceof AddressHandle)) throw new TypeError('ud.ah must be an AddressHandle');
    out.ah = u.ah.handle;
    out.remoteQpn = checkUint(u.remoteQpn, 'ud.remoteQpn', 0xffffff);
    out.remoteQkey = checkUint(u.remoteQkey, 'ud.remoteQkey');
  }
  if (wr.opcode === 'BIND_MW') {
    const b = checkBind(wr);
    out.mw = b.mw.handle;
    out.bindMr = b.mr.handle;
    out.bindAddr = b.addr;
    out.bindLength = b.length;
    out.bindAccess = b.access;
    if (b.keyByte >= 0) out.keyByte = b.keyByte;
  }
  return out;
}

/** A BIND_MW's `bind`, checked the same way for both post paths; keyByte -1: the next one. */
function checkBind(wr: SendWorkRequest): { mw: MemoryWindow; mr: MemoryRegion; addr: number; length: number; access: number; keyByte: number } {
  const b = checkObject<NonNullable<SendWorkRequest['bind']>>(wr.bind, 'bind');
  if (!(b.mw instanceof MemoryWindow)) throw new TypeError('bind.mw must be a MemoryWindow');
  if (b.mw.type !== 2) throw new TypeError('BIND_MW work requests bind type 2 windows; use MemoryWindow.bind() for type 1');
  if (!(b.mr instanceof MemoryRegion)) {
    throw new TypeError('bind.mr must be a MemoryRegion (invalidate a type 2 window with LOCAL_INV instead of unbinding)');
  }
  return {
    mw: b.mw,
    mr: b.mr,
    addr: checkUint(b.addr ?? b.mr.addr, 'bind.addr', Number.MAX_SAFE_INTEGER),
    length: checkUint(b.length ?? b.mr.length, 'bind.length', Number.MAX_SAFE_INTEGER),
    access: checkUint(b.access, 'bind.access'),
    keyByte: b.keyByte === undefined ? -1 : checkUint(b.keyByte, 'bind.keyByte', 255),
  };
}

/**
 * A queue pair (ibv_qp). Created by ProtectionDomain.createQueuePair() or,
 * connected through rdma_cm, by CmId.createQueuePair().
 */
export class QueuePair extends Resource {
  readonly pd: ProtectionDomain;
  readonly sendCq: CompletionQueue;
  readonly recvCq: CompletionQueue;
  readonly srq: SharedReceiveQueue | undefined;
  readonly type: QpTypeName;
  readonly sigAll: boolean;
  /** @internal */
  readonly handle: any;

  /** @internal */
  constructor(pd: ProtectionDomain, init: QueuePairInit, cmIdHandle?: unknown) {
    super();
    checkObject(init, 'init');
    if (!(init.sendCq instanceof CompletionQueue)) throw new TypeError('sendCq must be a CompletionQueue');
    if (!(init.recvCq instanceof CompletionQueue)) throw new TypeError('recvCq must be a CompletionQueue');
    if (init.srq !== undefined && !(init.srq instanceof SharedReceiveQueue)) throw new TypeError('srq must be a SharedReceiveQueue');
    const type = init.type ?? 'RC';
    if (QpType[type] === undefined) throw new TypeError(`type must be one of ${Object.keys(QpType).join(', ')}`);
    this.pd = pd;
    this.sendCq = init.sendCq;
    this.recvCq = init.recvCq;
    this.srq = init.srq;
    this.type = type;
    this.sigAll = init.sigAll ?? false;
    const attrs = {
      type: QpType[type],
      sendCq: init.sendCq.handle,
      recvCq: init.recvCq.handle,
      srq: init.srq?.handle ?? null,
      maxSendWr: checkUint(init.maxSendWr ?? 128, 'maxSendWr', 0xffffffff, 1),
      maxRecvWr: checkUint(init.maxRecvWr ?? 128, 'maxRecvWr'),
      maxSendSge: checkUint(init.maxSendSge ?? 1, 'maxSendSge', 0xffffffff, 1),
      maxRecvSge: checkUint(init.maxRecvSge ?? 1, 'maxRecvSge'),
      maxInlineData: checkUint(init.maxInlineData ?? 0, 'maxInlineData'),
      sigAll: this.sigAll,
    };
    this.handle = new (native().QueuePair)(pd.handle, attrs, cmIdHandle);
    const caps = this.handle.caps;
    this.#maxSendWr = caps.maxSendWr;
    this.#maxRecvWr = caps.maxRecvWr;
    this.#growPacks(SEND_STRIDE * 16, RECV_STRIDE * 16);
    this.dependOn(pd, init.sendCq, init.recvCq, init.srq);
  }

  get qpNum(): number {
    return this.handle.qpNum;
  }

  /** The send queue's depth as the provider granted it (at least the maxSendWr asked for). */
  get maxSendWr(): number {
    return this.#maxSendWr;
  }

  /** The receive queue's depth as the provider granted it (at least the maxRecvWr asked for). */
  get maxRecvWr(): number {
    return this.#maxRecvWr;
  }

  /** the queue sizes the provider granted (at least those asked for) */
  readonly #maxSendWr: number;
  readonly #maxRecvWr: number;

  modify(attr: QpAttr): void {
    this.assertOpen();
    this.handle.modify(toNativeAttr(attr));
  }

  query(): QpQuery {
    this.assertOpen();
    const q = this.handle.query();
    q.qpState = STATE_NAMES[q.qpState] ?? 'ERR';
    q.curQpState = STATE_NAMES[q.curQpState] ?? 'ERR';
    q.pathMigState = MIG_NAMES[q.pathMigState] ?? 'MIGRATED';
    return q;
  }

  /**
   * Connects an RC QP by hand: RESET -> INIT -> RTR -> RTS, with the peer's
   * QP number and GID (RoCE) or LID (InfiniBand).
   */
  connectTo(remote: { qpNum: number; psn?: number; gid?: string; lid?: number }, local: {
    port?: number; sgidIndex?: number; psn?: number; pathMtu?: QpAttr['pathMtu']; accessFlags?: number;
    timeout?: number; retryCnt?: number; rnrRetry?: number; minRnrTimer?: number; maxRdAtomic?: number;
  } = {}): void {
    // everything is checked before the QP leaves RESET
    checkObject(remote, 'remote');
    checkObject(local, 'local');
    checkUint(remote.qpNum, 'remote.qpNum', 0xffffff);
    if (remote.psn !== undefined) checkUint(remote.psn, 'remote.psn', 0xffffff);
    if (remote.lid !== undefined) checkUint(remote.lid, 'remote.lid', 0xffff);
    if (remote.gid !== undefined && typeof remote.gid !== 'string') throw new TypeError('remote.gid must be a string');
    if (local.psn !== undefined) checkUint(local.psn, 'local.psn', 0xffffff);
    const port = local.port ?? 1;
    this.modify({ qpState: 'INIT', pkeyIndex: 0, portNum: port, qpAccessFlags: local.accessFlags ?? 0xf });
    const ahAttr: AhAttr = { portNum: port, sl: 0, dlid: remote.lid ?? 0 };
    if (remote.gid) ahAttr.grh = { dgid: remote.gid, sgidIndex: local.sgidIndex ?? 0, hopLimit: 64 };
    this.modify({
      qpState: 'RTR', pathMtu: local.pathMtu ?? 1024, destQpNum: checkUint(remote.qpNum, 'remote.qpNum'),
      rqPsn: remote.psn ?? 0, maxDestRdAtomic: local.maxRdAtomic ?? 16, minRnrTimer: local.minRnrTimer ?? 12, ahAttr,
    });
    this.modify({
      qpState: 'RTS', sqPsn: local.psn ?? 0, timeout: local.timeout ?? 14, retryCnt: local.retryCnt ?? 7,
      rnrRetry: local.rnrRetry ?? 7, maxRdAtomic: local.maxRdAtomic ?? 16,
    });
  }

  /**
   * Posts a list of send work requests (one ibv_post_send call).
   * `recvFirst`: receive work requests posted (ibv_post_recv) ahead of the
   * sends in the same native call, e.g. the receive a request consumed,
   * replaced as its response goes out: one call into the addon instead of
   * two. Receives of at most one SGE each go into that call, and then
   * every work request of both lists is checked before anything is posted;
   * receives with more SGEs are checked and posted on their own first, so
   * a send the addon then refuses (a field out of range) leaves them
   * posted. When a receive cannot be posted no send is (the error says
   * `recv: true`, `posted: 0`, and `recvPosted`: the receives posted
   * before the refused one).
   */
  postSend(wrs: SendWorkRequest[], recvFirst?: RecvWorkRequest[]): void {
    this.assertOpen();
    if (!Array.isArray(wrs)) throw new TypeError('wrs must be an array of work requests');
    const count = checkListLength(wrs, this.#maxSendWr, 'wrs');
    this.#checkInline(wrs);
    let recvs = 0;
    // receives that cannot be packed (more than one SGE, or a shape the
    // general path must check and name): converted (and checked) here,
    // posted on their own ahead of the sends
    let recvList: ReturnType<typeof toNativeRecvs> | undefined;
    if (recvFirst !== undefined) {
      if (!Array.isArray(recvFirst)) throw new TypeError('recvFirst must be an array of work requests');
      if (recvFirst.length !== 0) {
        if (this.srq) throw new TypeError('this QP receives through its SharedReceiveQueue: post there');
        checkListLength(recvFirst, this.#maxRecvWr, 'recvFirst');
        if (this.#packRecvs(recvFirst)) recvs = recvFirst.length;
        else recvList = toNativeRecvs(recvFirst);
      }
    }
    const signaled = this.#packSends(wrs);
    if (signaled >= 0) {
      if (recvList) postRecvsFirst(() => this.handle.postRecv(recvList));
      this.#postPacked(wrs, recvs);
      if (this.#handles.length) {
        for (const wr of wrs) if (wr.opcode === 'BIND_MW') wr.bind!.mw.boundThrough(this, wr.bind!.mr);
        this.#handles.length = 0;
      }
      if (signaled) this.sendCq.expect(signaled);
      return;
    }
    // an index loop, not wrs.map(): an Array subclass's map() could return anything
    const list: Array<Record<string, unknown>> = new Array(count);
    for (let i = 0; i < count; i++) list[i] = toNativeSend(wrs[i], this.sigAll);
    if (recvList) postRecvsFirst(() => this.handle.postRecv(recvList));
    else if (recvs) postRecvsFirst(() => this.handle.postRecvPacked(recvs));
    try {
      this.handle.postSend(list);
    } catch (err) {
      this.#sent(wrs, postedBefore(err), (i) => ((list[i].flags as number) & SendFlags.SIGNALED) !== 0);
      throw err;
    }
    this.#sent(wrs, count, (i) => ((list[i].flags as number) & SendFlags.SIGNALED) !== 0);
  }

  /**
   * The first `count` WRs of `wrs` were posted: their windows are bound
   * through this QP and their signaled completions are due on the send CQ.
   * After a failed post, exactly those the provider posted (the error's
   * `posted`), so that no bind or completion is missed or invented.
   */
  #sent(wrs: SendWorkRequest[], count: number, signaled: (i: number) => boolean): void {
    let n = 0;
    for (let i = 0; i < count; i++) {
      const wr = wrs[i];
      if (wr.opcode === 'BIND_MW') wr.bind!.mw.boundThrough(this, wr.bind!.mr);
      if (signaled(i)) n++;
    }
    if (n) this.sendCq.expect(n);
  }

  /**
   * Checks and packs one send work request once, for posting many times
   * with PreparedSend.post() (no object to build or check per post). Not
   * for BIND_MW (windows are tracked per bind) or UD sends; at most 4 SGEs.
   * The prepared send closes with this QP and with the regions its SGEs
   * name, so it never posts a stale lkey or copies inline data from
   * deregistered memory.
   */
  prepareSend(wr: SendWorkRequest): PreparedSend {
    this.assertOpen();
    checkObject(wr, 'work request');
    if (WrOpcode[wr.opcode] === undefined) throw new TypeError(`opcode must be one of ${Object.keys(WrOpcode).join(', ')}, got ${String(wr.opcode)}`);
    if (wr.opcode === 'BIND_MW') throw new TypeError('a BIND_MW cannot be prepared: post it with postSend()');
    if (wr.ud !== undefined) throw new TypeError('a UD send cannot be prepared: post it with postSend()');
    if (wr.sge !== undefined && (!Array.isArray(wr.sge) || wr.sge.length > PACKED_SGES)) {
      throw new TypeError(`sge must be an array of at most ${PACKED_SGES} entries to be prepared`);
    }
    checkUint(wr.wrId ?? 0, 'wrId', Number.MAX_SAFE_INTEGER);
    if (carriesImm(wr.opcode)) checkUint(wr.imm, 'imm');
    if (wr.opcode === 'SEND_WITH_INV' || wr.opcode === 'LOCAL_INV') checkUint(wr.invalidateRkey, 'invalidateRkey');
    if (targetsPeer(wr.opcode)) {
      checkU53(wr.remoteAddr, 'remoteAddr');
      checkUint(wr.rkey, 'rkey');
    }
    if (wr.opcode === 'ATOMIC_CMP_AND_SWP' || wr.opcode === 'ATOMIC_FETCH_AND_ADD') checkU53(wr.compareAdd, 'compareAdd');
    if (wr.opcode === 'ATOMIC_CMP_AND_SWP') checkU53(wr.swap, 'swap');
    const regions: MemoryRegion[] = [];
    for (const [j, s] of (wr.sge ?? []).entries()) {
      checkObject(s, `sge[${j}]`);
      checkUint(s.addr, `sge[${j}].addr`, Number.MAX_SAFE_INTEGER);
      checkUint(s.length, `sge[${j}].length`);
      checkUint(s.lkey, `sge[${j}].lkey`);
      const mr = this.pd.regionFor(s.lkey);
      if (mr) regions.push(mr);
    }
    this.#checkInline([wr]);
    const record = new Float64Array(SEND_STRIDE);
    const signaled = this.#packWr(wr, record, 0);
    if (signaled < 0) throw new TypeError('this work request cannot be prepared: post it with postSend()');
    return new PreparedSend(this, wr, record, signaled === 1, regions);
  }

  /** @internal posts a PreparedSend's record */
  postPrepared(record: Float64Array, signaled: boolean): void {
    if (this.#sendPack.length < SEND_STRIDE) this.#growPacks(SEND_STRIDE * 2, this.#recvPack.length);
    this.#sendPack.set(record);
    this.handle.postSendPacked(1, NO_HANDLES);
    if (signaled) this.sendCq.expect(1);
  }

  /** Posts a list of receive work requests (one ibv_post_recv call). */
  postRecv(wrs: RecvWorkRequest[]): void {
    this.assertOpen();
    if (!Array.isArray(wrs)) throw new TypeError('wrs must be an array of work requests');
    if (this.srq) throw new TypeError('this QP receives through its SharedReceiveQueue: post there');
    checkListLength(wrs, this.#maxRecvWr, 'wrs');
    if (this.#postRecvPacked(wrs)) return;
    this.handle.postRecv(toNativeRecvs(wrs));
  }

  /**
   * Inline data is copied by the CPU from sge.addr at post time, and no
   * lkey check protects that copy (rxe's provider memcpy()s from any
   * address): an inline SGE must lie inside a region registered here, or a
   * bad address would crash the process or send bytes beyond a buffer.
   */
  #checkInline(wrs: SendWorkRequest[]): void {
    for (let i = 0; i < wrs.length; i++) {
      const wr = wrs[i];
      if (typeof wr !== 'object' || wr === null || !wr.inline || !Array.isArray(wr.sge)) continue;
      for (let j = 0; j < wr.sge.length; j++) {
        const s = wr.sge[j];
        const mr = s && typeof s.lkey === 'number' ? this.pd.regionFor(s.lkey) : undefined;
        if (!mr || typeof s.addr !== 'number' || typeof s.length !== 'number' || !mr.covers(s.addr, s.length)) {
          throw new RangeError(`sge[${j}] of work request ${i} is not inside a region registered on this PD under its lkey ` +
            '(inline data is copied from that memory by the CPU)');
        }
      }
    }
  }

  #sendPack = new Float64Array(0);
  #recvPack = new Float64Array(0);

  /** The native side holds the packs (bound once, posts pass a count). */
  #growPacks(send: number, recv: number): void {
    if (send > this.#sendPack.length) this.#sendPack = new Float64Array(send);
    if (recv > this.#recvPack.length) this.#recvPack = new Float64Array(recv);
    this.handle.setPackBuffers(this.#sendPack, this.#recvPack);
  }

  /**
   * The fast path: common WRs (at most PACKED_SGES SGEs, no UD address,
   * 64-bit fields that fit a double; window binds by handle index) packed
   * into a Float64Array for one native call (#postPacked). Returns the
   * number of signaled WRs packed, or -1 when a WR needs the general path
   * (which also produces the precise argument errors).
   */
  #packSends(wrs: SendWorkRequest[]): number {
    const n = wrs.length;
    if (this.#sendPack.length < n * SEND_STRIDE) this.#growPacks(n * SEND_STRIDE * 2, this.#recvPack.length);
    const f = this.#sendPack;
    this.#handles.length = 0;
    let signaled = 0;
    for (let i = 0; i < n; i++) {
      const s = this.#packWr(wrs[i], f, i * SEND_STRIDE);
      if (s < 0) return -1;
      signaled += s;
    }
    return signaled;
  }

  /** Posts the packed sends, after the first `recvs` records of the recv pack (one native call). */
  #postPacked(wrs: SendWorkRequest[], recvs: number): void {
    const f = this.#sendPack;
    try {
      this.handle.postSendPacked(wrs.length, this.#handles, recvs);
    } catch (err) {
      this.#sent(wrs, postedBefore(err), (i) => (f[i * SEND_STRIDE + 2] & SendFlags.SIGNALED) !== 0);
      this.#handles.length = 0;
      throw err;
    }
  }

  /** Packs one WR into f at o: 1 when signaled, 0 when not, -1 when it needs the general path. */
  #packWr(wr: SendWorkRequest, f: Float64Array, o: number): number {
    if (typeof wr !== 'object' || wr === null) return -1;
    const op = (WrOpcode as Partial<Record<string, number>>)[wr.opcode];
    if (typeof op !== 'number' || wr.ud !== undefined) return -1;
    const wrId = wr.wrId ?? 0;
    if (typeof wrId !== 'number') return -1;
    let flags = 0;
    let signaled = 0;
    if (this.sigAll || wr.signaled !== false) {
      flags |= SendFlags.SIGNALED;
      signaled = 1;
    }
    if (wr.inline) flags |= SendFlags.INLINE;
    if (wr.fence) flags |= SendFlags.FENCE;
    if (wr.solicited) flags |= SendFlags.SOLICITED;
    f[o] = wrId;
    f[o + 1] = op;
    f[o + 2] = flags;
    const sge = wr.sge;
    if (sge === undefined) {
      f[o + 3] = 0;
    } else if (Array.isArray(sge) && sge.length <= PACKED_SGES) {
      f[o + 3] = sge.length;
      for (let j = 0; j < sge.length; j++) {
        const s = sge[j];
        if (typeof s !== 'object' || s === null || typeof s.addr !== 'number' || typeof s.length !== 'number' ||
            typeof s.lkey !== 'number') return -1;
        const so = o + 9 + 3 * j;
        f[so] = s.addr;
        f[so + 1] = s.length;
        f[so + 2] = s.lkey;
      }
    } else return -1;
    if (op === WrOpcode.BIND_MW) {
      if (f[o + 3] !== 0) return -1;
      this.#packBind(wr, o);
      return signaled;
    }
    switch (op) {
      case WrOpcode.SEND_WITH_IMM:
      case WrOpcode.RDMA_WRITE_WITH_IMM:
        if (typeof wr.imm !== 'number') return -1;
        f[o + 4] = wr.imm;
        break;
      case WrOpcode.SEND_WITH_INV:
      case WrOpcode.LOCAL_INV:
        if (typeof wr.invalidateRkey !== 'number') return -1;
        f[o + 4] = wr.invalidateRkey;
        break;
    }
    if (op === WrOpcode.RDMA_WRITE || op === WrOpcode.RDMA_WRITE_WITH_IMM || op === WrOpcode.RDMA_READ ||
        op === WrOpcode.ATOMIC_CMP_AND_SWP || op === WrOpcode.ATOMIC_FETCH_AND_ADD) {
      const remote = packable(wr.remoteAddr);
      if (remote < 0 || typeof wr.rkey !== 'number') return -1;
      f[o + 5] = remote;
      f[o + 6] = wr.rkey;
    }
    if (op === WrOpcode.ATOMIC_CMP_AND_SWP || op === WrOpcode.ATOMIC_FETCH_AND_ADD) {
      const compareAdd = packable(wr.compareAdd);
      if (compareAdd < 0) return -1;
      f[o + 7] = compareAdd;
      f[o + 8] = 0;
      if (op === WrOpcode.ATOMIC_CMP_AND_SWP) {
        const swap = packable(wr.swap);
        if (swap < 0) return -1;
        f[o + 8] = swap;
      }
    }
    return signaled;
  }

  /** Native window and region handles of the packed BIND_MWs being posted. */
  #handles: unknown[] = [];

  /** A BIND_MW record: the same checks as the general path, handles by index. */
  #packBind(wr: SendWorkRequest, o: number): void {
    const b = checkBind(wr);
    const f = this.#sendPack;
    const h = this.#handles;
    f[o + 4] = h.push(b.mw.handle) - 1;
    f[o + 5] = h.push(b.mr.handle) - 1;
    f[o + 6] = b.addr;
    f[o + 7] = b.length;
    f[o + 8] = b.access;
    f[o + 9] = b.keyByte;
  }

  #postRecvPacked(wrs: RecvWorkRequest[]): boolean {
    if (!this.#packRecvs(wrs)) return false;
    this.handle.postRecvPacked(wrs.length);
    return true;
  }

  /** Packs receive WRs into the recv pack; false when one needs the general path. */
  #packRecvs(wrs: RecvWorkRequest[]): boolean {
    const n = wrs.length;
    if (this.#recvPack.length < n * RECV_STRIDE) this.#growPacks(this.#sendPack.length, n * RECV_STRIDE * 2);
    const f = this.#recvPack;
    for (let i = 0; i < n; i++) {
      const wr = wrs[i];
      if (typeof wr !== 'object' || wr === null) return false;
      const o = i * RECV_STRIDE;
      const wrId = wr.wrId ?? 0;
      if (typeof wrId !== 'number') return false;
      f[o] = wrId;
      const sge = wr.sge;
      if (sge === undefined || sge.length === 0) {
        f[o + 1] = 0;
      } else if (Array.isArray(sge) && sge.length === 1 && typeof sge[0] === 'object' && sge[0] !== null &&
                 typeof sge[0].addr === 'number' && typeof sge[0].length === 'number' && typeof sge[0].lkey === 'number') {
        f[o + 1] = 1;
        f[o + 2] = sge[0].addr;
        f[o + 3] = sge[0].length;
        f[o + 4] = sge[0].lkey;
      } else return false;
    }
    return true;
  }

  protected release(): void {
    this.handle.close();
  }
}

/**
 * Posts postSend's `recvFirst` receives on their own (`post`), ahead of the
 * sends: a failure says that it was the receives (`recv`), that no send was
 * posted (`posted` 0) and how many receives were (`recvPosted`).
 */
function postRecvsFirst(post: () => void): void {
  try {
    post();
  } catch (err) {
    if (typeof err === 'object' && err !== null) {
      const e = err as { posted?: unknown; recvPosted?: number; recv?: boolean };
      e.recvPosted = typeof e.posted === 'number' ? e.posted : 0;
      e.posted = 0;
      e.recv = true;
    }
    throw err;
  }
}

/**
 * An address handle (ibv_ah): the destination of UD sends (`ud.ah` in a
 * SendWorkRequest). From ProtectionDomain.createAddressHandle(). Providers
 * copy it into the work request at post time, so closing it does not
 * affect sends already posted.
 */
export class AddressHandle extends Resource {
  readonly pd: ProtectionDomain;
  readonly attr: AhAttr;
  /** @internal */
  readonly handle: any;

  /** @internal use ProtectionDomain.createAddressHandle() */
  constructor(pd: ProtectionDomain, attr: AhAttr) {
    super();
    checkAhAttr(attr, 'attr');
    if (attr.grh !== undefined && typeof attr.grh.dgid !== 'string') throw new TypeError('grh.dgid must be a GID string');
    this.pd = pd;
    this.attr = { ...attr, grh: attr.grh && { ...attr.grh } };
    this.handle = new (native().AddressHandle)(pd.handle, attr);
    this.dependOn(pd);
  }

  protected release(): void {
    this.handle.close();
  }
}
