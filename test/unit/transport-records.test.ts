/**
 * The server's record rules (lib/transport/records.ts), checked against
 * docs/protocol.md §7.1 step 2, §7.5 and §8 ("State"), not against the code:
 * random sequences of request copies, RESUME_REQs and handler completions
 * on several paths with random seqs, and after every step the rules'
 * decision for the record as it was, plus invariants over the whole history
 * (a seq runs at most once, a replay answers a done seq with the result it
 * recorded, a stale copy never runs, the answer goes to the latest copy's
 * path, read data only to the latest copy's destination on its own path).
 * (A RESUME_REQ older than the record is a stale ask since 1.1, not a violation.)
 */
import fc from 'fast-check';
import { ChunkRecord, complete, newRecord, onRequest, onResume, readDataGoesTo } from '../../lib/transport/records';

type Path = string;
const PATHS: Path[] = ['p0', 'p1', 'p2', 'p3'];

type Event =
  | { t: 'req'; path: Path; kind: 'write' | 'read'; seq: bigint; addr: bigint; rkey: number }
  | { t: 'resume'; path: Path; seq: bigint }
  | { t: 'finish'; status: number; hdr: number; len: number };

const seqArb = fc.integer({ min: 1, max: 6 }).map(BigInt);
const pathArb = fc.constantFrom(...PATHS);
const eventArb: fc.Arbitrary<Event> = fc.oneof(
  fc.record({
    t: fc.constant('req' as const), path: pathArb, kind: fc.constantFrom('write' as const, 'read' as const), seq: seqArb,
    addr: fc.bigInt({ min: 0n, max: 1n << 40n }), rkey: fc.integer({ min: 1, max: 0xffffffff }),
  }),
  fc.record({ t: fc.constant('resume' as const), path: pathArb, seq: seqArb }),
  fc.record({ t: fc.constant('finish' as const), status: fc.integer({ min: 0, max: 4095 }), hdr: fc.integer({ min: 0, max: 8 }), len: fc.integer({ min: 0, max: 4096 }) }),
);

function snapshot(r: ChunkRecord<Path>): string {
  return JSON.stringify(r, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v instanceof Uint8Array ? Array.from(v) : v));
}

/** What §7.5 (and §8's state rule) says a request copy with seq s on `path` gets, for the record as it is. */
function expectedForRequest(r: ChunkRecord<Path>, e: Extract<Event, { t: 'req' }>): string {
  if (e.seq < r.seq) return 'violation:seq'; // an older seq on a live path cannot happen
  if (e.seq === r.seq && r.state === 'resumed') return r.resumedOn === e.path ? 'run' : 'drop-stale'; // §7.1 step 2, §7.5
  if (e.seq === r.seq && r.state === 'done') return r.kind === e.kind ? 'replay' : 'violation:seq';
  if (e.seq === r.seq && r.state === 'running') return r.kind === e.kind ? 'await' : 'violation:seq';
  if (e.seq > r.seq && r.state === 'running') return 'violation:chunk-busy'; // §8: a higher seq on a running chunk
  return 'run';
}

/** What §7.5's RESUME_REQ rules say. */
function expectedForResume(r: ChunkRecord<Path>, e: Extract<Event, { t: 'resume' }>): string {
  if (e.seq < r.seq) return 'drop-stale'; // a stale ask (1.1; before, a violation)
  if (e.seq === r.seq && r.state === 'done') return 'replay';
  if (e.seq === r.seq && r.state === 'running') return 'await';
  if (e.seq > r.seq && r.state === 'running') return 'violation:chunk-busy';
  return 'resumed'; // the seq never arrived (or was only resumed)
}

/** Drives one chunk's record through `events`, checking each step; returns the decisions. */
function drive(events: Event[]): string[] {
  const rec = newRecord<Path>();
  const out: string[] = [];
  // the history, kept by the test (not read from the record)
  const ran = new Set<bigint>();
  const results = new Map<bigint, { status: number; header: number[]; dataLen: number; kind: string }>();
  let running: { seq: bigint; kind: 'write' | 'read'; latest: Path } | undefined;
  let resumed: { seq: bigint; path: Path } | undefined;
  let accepted = 0n; // the highest seq that ran or was resumed
  let dest: { seq: bigint; path: Path; addr: bigint; rkey: number } | undefined;
  for (const e of events) {
    if (e.t === 'finish') {
      if (!running) {
        expect(() => complete(rec, e.status, new Uint8Array(e.hdr), e.len)).toThrow();
        out.push('finish-refused');
        continue;
      }
      const header = new Uint8Array(e.hdr).fill(e.status & 0xff);
      const to = complete(rec, e.status, header, e.len);
      // the answer goes to the path of the latest copy (request or resume) of the running seq
      expect(to).toBe(running.latest);
      results.set(running.seq, { status: e.status, header: Array.from(header), dataLen: running.kind === 'read' ? e.len : 0, kind: running.kind });
      expect(rec.state).toBe('done');
      running = undefined;
      out.push('finished');
      continue;
    }
    const before = snapshot(rec);
    const pre = { seq: rec.seq, state: rec.state };
    const want = e.t === 'req' ? expectedForRequest(rec, e) : expectedForResume(rec, e);
    const d = e.t === 'req' ? onRequest(rec, 7, e.seq, e.kind, e.path, e.kind === 'read' ? e.addr : 0n, e.kind === 'read' ? e.rkey : 0) : onResume(rec, 7, e.seq, e.path);
    const got = d.decision === 'violation' ? `violation:${d.reason}` : d.decision;
    expect(got).toBe(want);
    out.push(got);
    if (d.decision === 'violation') {
      // a violation changes nothing (the path closes)
      expect(snapshot(rec)).toBe(before);
      expect(d.message).toMatch(/chunk 7/);
    }
    // an older seq than one already accepted: a request is a violation, a resume a stale ask (no answer)
    if (e.seq < accepted) expect(got).toBe(e.t === 'req' ? 'violation:seq' : 'drop-stale');
    // a request never gets a RESUME_RSP, a resume never runs the handler
    if (e.t === 'req') expect(got).not.toBe('resumed');
    else expect(got).not.toBe('run');
    switch (d.decision) {
      case 'run':
        // a seq runs the handler at most once
        expect(ran.has(e.seq)).toBe(false);
        ran.add(e.seq);
        // a copy of a resumed seq runs only on the path it was resumed on
        if (resumed && resumed.seq === e.seq) expect(e.path).toBe(resumed.path);
        running = { seq: e.seq, kind: (e as Extract<Event, { t: 'req' }>).kind, latest: e.path };
        resumed = undefined;
        accepted = e.seq;
        break;
      case 'await':
        expect(running?.seq).toBe(e.seq);
        running!.latest = e.path;
        break;
      case 'replay': {
        // only a done seq, answered with what its handler returned
        expect(pre).toEqual({ seq: e.seq, state: 'done' });
        const r = results.get(e.seq)!;
        expect(r).toBeDefined();
        expect({ status: rec.status, header: Array.from(rec.header), dataLen: rec.dataLen, kind: rec.kind }).toEqual(r);
        break;
      }
      case 'drop-stale':
        if (e.t === 'req') {
          expect(resumed).toEqual({ seq: e.seq, path: resumed!.path });
          expect(e.path).not.toBe(resumed!.path);
        } else {
          expect(e.seq < pre.seq).toBe(true);
        }
        expect(snapshot(rec)).toBe(before); // dropped: the record stays as it was
        break;
      case 'resumed':
        expect(ran.has(e.seq)).toBe(false); // a seq that ran is replayed or awaited, never resumed
        resumed = { seq: e.seq, path: e.path };
        accepted = e.seq;
        expect(rec.header.length).toBe(0);
        break;
    }
    // read data goes only to the destination of the latest copy of this seq, on the path it arrived on
    if (e.t === 'req' && e.kind === 'read' && ['run', 'await', 'replay'].includes(got)) dest = { seq: e.seq, path: e.path, addr: e.addr, rkey: e.rkey };
    if (e.t === 'req' && e.kind === 'write' && got === 'run') dest = undefined;
    // (consulted only for an answer: a running or done record; a resumed one answers RESUME_RSP)
    for (const p of rec.state === 'running' || rec.state === 'done' ? PATHS : []) {
      const goes = readDataGoesTo(rec, p);
      const may = rec.kind === 'read' && dest !== undefined && dest.seq === rec.seq && dest.path === p;
      if (goes) expect(may).toBe(true);
      if (goes) expect([rec.destAddr, rec.destRkey]).toEqual([dest!.addr, dest!.rkey]);
    }
    expect(rec.state === 'running').toBe(running !== undefined);
  }
  return out;
}

describe('record rules, property-based (§7.5)', () => {
  test('random copies, resumes and completions on four paths follow the rules and keep the invariants', () => {
    fc.assert(fc.property(fc.array(eventArb, { maxLength: 60 }), (events) => {
      drive(events);
    }), { numRuns: 800 });
  });

  test('failovers: one seq at a time, copies on several paths, then the next seq', () => {
    // the client's real shape: seqs rise, each IO's copies and resumes arrive in any order
    const ioArb = fc.record({
      kind: fc.constantFrom('write' as const, 'read' as const),
      steps: fc.array(fc.oneof(
        fc.record({ t: fc.constant('req' as const), path: pathArb }),
        fc.record({ t: fc.constant('resume' as const), path: pathArb }),
        fc.constant({ t: 'finish' as const }),
      ), { minLength: 1, maxLength: 8 }),
    });
    fc.assert(fc.property(fc.array(ioArb, { maxLength: 12 }), (ios) => {
      const events: Event[] = [];
      ios.forEach((io, i) => {
        const seq = BigInt(i + 1);
        for (const s of io.steps) {
          if (s.t === 'req') events.push({ t: 'req', path: s.path, kind: io.kind, seq, addr: BigInt(0x1000 * (i + 1)), rkey: i + 1 });
          else if (s.t === 'resume') events.push({ t: 'resume', path: s.path, seq });
          else events.push({ t: 'finish', status: i % 4096, hdr: i % 3, len: 100 + i });
        }
        // the client moves on only after an answer: the IO is finished if it ran
        events.push({ t: 'finish', status: 0, hdr: 0, len: 0 });
      });
      const out = drive(events);
      // no violation when the client behaves (seqs rise, one IO per chunk at a time)
      expect(out.filter((d) => d.startsWith('violation'))).toEqual([]);
    }), { numRuns: 400 });
  });
});

describe('record rules, one bullet each', () => {
  test('a new seq runs; the same seq once done replays with the recorded result', () => {
    const r = newRecord<Path>();
    expect(onRequest(r, 0, 1n, 'write', 'p0').decision).toBe('run');
    expect(complete(r, 17, Buffer.from('ok'), 0)).toBe('p0');
    expect(onRequest(r, 0, 1n, 'write', 'p1').decision).toBe('replay');
    expect([r.status, Buffer.from(r.header).toString()]).toEqual([17, 'ok']);
    expect(onResume(r, 0, 1n, 'p2').decision).toBe('replay');
  });

  test('the same seq while running: answered once, on the latest copy\'s path', () => {
    const r = newRecord<Path>();
    onRequest(r, 0, 4n, 'read', 'p0', 0x1000n, 5);
    expect(onRequest(r, 0, 4n, 'read', 'p1', 0x2000n, 6).decision).toBe('await');
    expect(onResume(r, 0, 4n, 'p2').decision).toBe('await');
    expect(complete(r, 0, new Uint8Array(0), 10)).toBe('p2');
    // the read data only to the latest request copy's destination, on its path
    expect(readDataGoesTo(r, 'p1')).toBe(true);
    expect(readDataGoesTo(r, 'p2')).toBe(false);
    expect(readDataGoesTo(r, 'p0')).toBe(false);
    expect([r.destAddr, r.destRkey]).toEqual([0x2000n, 6]);
  });

  test('a RESUME_REQ for the running IO marks it asked (its answer carries its seq); a request copy does not, a new IO clears it', () => {
    const r = newRecord<Path>();
    onRequest(r, 0, 1n, 'write', 'p0');
    expect(onRequest(r, 0, 1n, 'write', 'p1').decision).toBe('await');
    expect(r.asked).toBe(false);
    expect(onResume(r, 0, 1n, 'p2').decision).toBe('await');
    expect(r.asked).toBe(true);
    expect(complete(r, 0, new Uint8Array(0), 0)).toBe('p2');
    expect(onRequest(r, 0, 2n, 'write', 'p0').decision).toBe('run');
    expect(r.asked).toBe(false);
  });

  test('an older seq: a request is a violation, a resume a stale ask that gets no answer', () => {
    const r = newRecord<Path>();
    onRequest(r, 3, 5n, 'write', 'p0');
    complete(r, 0, new Uint8Array(0), 0);
    expect(onRequest(r, 3, 4n, 'write', 'p0')).toMatchObject({ decision: 'violation', reason: 'seq' });
    expect(onResume(r, 3, 4n, 'p1').decision).toBe('drop-stale');
    expect([r.seq, r.state]).toEqual([5n, 'done']);
  });

  test('a higher seq on a running chunk is a violation (chunk-busy)', () => {
    const r = newRecord<Path>();
    onRequest(r, 3, 5n, 'write', 'p0');
    expect(onRequest(r, 3, 6n, 'write', 'p1')).toMatchObject({ decision: 'violation', reason: 'chunk-busy' });
    expect(onResume(r, 3, 6n, 'p1')).toMatchObject({ decision: 'violation', reason: 'chunk-busy' });
  });

  test('resume of a seq that never arrived: its copies elsewhere are stale, on the resumed path it runs', () => {
    const r = newRecord<Path>();
    expect(onResume(r, 0, 2n, 'p1').decision).toBe('resumed');
    expect(onRequest(r, 0, 2n, 'write', 'p0').decision).toBe('drop-stale');
    expect(r.state).toBe('resumed');
    expect(onRequest(r, 0, 2n, 'write', 'p1').decision).toBe('run');
    expect(onRequest(r, 0, 2n, 'write', 'p0').decision).toBe('await');
  });

  test('the same seq cannot change kind', () => {
    const r = newRecord<Path>();
    onRequest(r, 0, 1n, 'write', 'p0');
    complete(r, 0, new Uint8Array(0), 0);
    expect(onRequest(r, 0, 1n, 'read', 'p1', 1n, 1)).toMatchObject({ decision: 'violation', reason: 'seq' });
  });
});
