/**
 * The reference docs cover the public surface: every public member of every
 * exported class is named in its class's section of docs/api.md (verbs,
 * errors, the transport's client and server) or in docs/p2p.md, and every
 * other exported class is named in its doc. Public means exported from
 * lib/index.ts at run time, not private or protected, not `#`, and not
 * tagged @internal. Read from the TypeScript sources with the compiler's
 * parser, so a method added without docs fails here.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as ts from 'typescript';
import * as lib from '../../lib';

const ROOT = path.resolve(__dirname, '..', '..', '..');

interface PublicClass { name: string; file: string; members: string[] }

/** Exported classes declared in `dir` that `ns` exports, with their public members. */
function classesOf(dir: string, ns: Record<string, unknown>): PublicClass[] {
  const out: PublicClass[] = [];
  for (const f of fs.readdirSync(path.join(ROOT, dir)).filter((x) => x.endsWith('.ts')).sort()) {
    const file = path.join(dir, f);
    const src = ts.createSourceFile(file, fs.readFileSync(path.join(ROOT, file), 'utf8'), ts.ScriptTarget.ES2022, true);
    src.forEachChild((node) => {
      if (!ts.isClassDeclaration(node) || !node.name || typeof ns[node.name.text] !== 'function') return;
      const members: string[] = [];
      for (const m of node.members) {
        if (!m.name || ts.isPrivateIdentifier(m.name) || ts.isConstructorDeclaration(m) || ts.isComputedPropertyName(m.name)) continue;
        const mods = ts.canHaveModifiers(m) ? ts.getModifiers(m) ?? [] : [];
        if (mods.some((x) => x.kind === ts.SyntaxKind.PrivateKeyword || x.kind === ts.SyntaxKind.ProtectedKeyword)) continue;
        if (ts.getJSDocTags(m).some((t) => t.tagName.text === 'internal')) continue;
        const name = m.name.getText(src);
        if (!members.includes(name)) members.push(name);
      }
      out.push({ name: node.name.text, file, members });
    });
  }
  return out;
}

/** The section of a markdown doc under the first heading `match` finds, down to the next heading of its level or above. */
function section(doc: string, match: RegExp): string | undefined {
  const lines = doc.split('\n');
  const i = lines.findIndex((l) => /^#+ /.test(l) && match.test(l));
  if (i < 0) return undefined;
  const level = lines[i].match(/^#+/)![0].length;
  let j = i + 1;
  while (j < lines.length && !(/^#+ /.test(lines[j]) && lines[j].match(/^#+/)![0].length <= level)) j++;
  return lines.slice(i, j).join('\n');
}

const named = (text: string, word: string) => new RegExp(`\\b${word}\\b`).test(text);
const api = fs.readFileSync(path.join(ROOT, 'docs', 'api.md'), 'utf8');
const p2pDoc = fs.readFileSync(path.join(ROOT, 'docs', 'p2p.md'), 'utf8');
const verbs = [...classesOf('lib/verbs', lib as never), ...classesOf('lib', lib as never)];
const transport = classesOf('lib/transport', lib.transport as never);
const p2p = classesOf('lib/p2p', lib.p2p as never);

test('the sources were read: the classes the API is made of are all found', () => {
  expect(verbs.map((c) => c.name)).toEqual(expect.arrayContaining([
    'Device', 'ProtectionDomain', 'MemoryRegion', 'MemoryWindow', 'CompletionQueue', 'CompletionBatch', 'QueuePair', 'PreparedSend', 'CmId', 'RdmaError', 'Resource',
  ]));
  expect(transport.map((c) => c.name)).toEqual(expect.arrayContaining(['TransportClient', 'TransportServer', 'TransportError']));
  expect(p2p.map((c) => c.name)).toEqual(expect.arrayContaining(['P2pMemory', 'P2pTopology']));
  expect(verbs.find((c) => c.name === 'QueuePair')!.members).toEqual(expect.arrayContaining(['postSend', 'prepareSend', 'modify']));
  // @internal members are not public surface
  expect(verbs.find((c) => c.name === 'QueuePair')!.members).not.toContain('postPrepared');
});

test('docs/api.md: every public member of the verbs classes and RdmaError is in its class section', () => {
  const undocumented: string[] = [];
  for (const c of verbs) {
    // Resource's close/dispose/closed are the conventions every class shares
    const sec = c.name === 'Resource' ? section(api, /^## Conventions$/)
      : section(api, new RegExp(`class ${c.name}\\b`)) ?? section(api, new RegExp(`^#+ \`?${c.name}\`?$`)) ?? section(api, new RegExp(`\\b${c.name}\\b`));
    if (!sec) {
      undocumented.push(`${c.name} (${c.file}): no section`);
      continue;
    }
    for (const m of c.members) if (!named(sec, m)) undocumented.push(`${c.name}.${m} (${c.file})`);
  }
  expect(undocumented).toEqual([]);
});

test('docs/api.md: every public member of TransportClient and TransportServer is in the Client / Server section', () => {
  const undocumented: string[] = [];
  for (const [cls, heading] of [['TransportClient', /^### Client$/], ['TransportServer', /^### Server$/]] as const) {
    const sec = section(api, heading);
    expect(sec).toBeDefined();
    for (const m of transport.find((c) => c.name === cls)!.members) if (!named(sec!, m)) undocumented.push(`${cls}.${m}`);
  }
  expect(undocumented).toEqual([]);
  // the namespace's other classes (codec, policies, backoff, errors) are named in the Transport part
  const part = section(api, /^## Transport$/)!;
  expect(transport.map((c) => c.name).filter((n) => !named(part, n))).toEqual([]);
});

test('docs/p2p.md: every p2p class is named and the public members of P2pMemory and P2pTopology are documented', () => {
  expect(p2p.map((c) => c.name).filter((n) => !named(p2pDoc, n))).toEqual([]);
  const undocumented: string[] = [];
  for (const c of p2p.filter((x) => x.name === 'P2pMemory' || x.name === 'P2pTopology')) {
    for (const m of c.members) if (!named(p2pDoc, m)) undocumented.push(`${c.name}.${m}`);
  }
  expect(undocumented).toEqual([]);
});
