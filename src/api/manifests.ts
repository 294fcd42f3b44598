// AccessGateway manifests from files: the one loader behind `validate` and `serve`. Files as
// given, directories' *.yaml/*.yml/*.json; each AccessGateway document with its problems (the
// CRD schema, its CEL rules' twins, the regexes), and what is wrong with a file as a whole.
import { closeSync, constants, fstatSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { group, kind, version } from './schema.js';
import { validateGateway, type Problem } from './validate.js';
import { oneLine } from '../printable.js';

export function manifestFiles(paths: string[]): string[] {
  const files = paths.flatMap((p) => {
    if (statSync(p).isDirectory()) {
      return readdirSync(p).filter((f) => /\.(ya?ml|json)$/.test(f)).sort().map((f) => join(p, f));
    }
    return [p];
  });
  // a file given twice (as itself and in its directory) is read once, where it first comes
  const seen = new Set<string>();
  return files.filter((f) => {
    const at = resolve(f);
    return !seen.has(at) && seen.add(at);
  });
}

/** Largest manifest file read (a gateway at the schema's bounds is ~1.5 MB). */
export const maxManifestBytes = 16 << 20;

/** A manifest file's text: a regular file of at most maxManifestBytes (a FIFO would block the
 * process on its read for ever; opened without blocking, it is refused). */
function readManifestText(file: string): string {
  const fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error('not a regular file');
    if (st.size > maxManifestBytes) throw new Error(`${st.size} bytes; at most ${maxManifestBytes}`);
    const buf = Buffer.alloc(st.size);
    let got = 0;
    while (got < st.size) {
      const n = readSync(fd, buf, got, st.size - got, null);
      if (n === 0) break; // (shortened meanwhile)
      got += n;
    }
    return buf.toString('utf8', 0, got);
  } finally {
    closeSync(fd);
  }
}

export interface ManifestGateway {
  /** How messages name it: "AccessGateway NS/NAME" (NAME without a namespace; "(document N[, item M])" without a name). */
  label: string;
  /** NS/NAME (its metadata.namespace is set: "default" when it had none). */
  key: string;
  /** Whether it has a name (without one it is no copy of another). */
  named: boolean;
  /** The object as written (no defaults but the namespace). */
  object: Record<string, any>;
  problems: Problem[];
}

export interface ManifestFile {
  file: string;
  /** Why the file as a whole cannot be used (unreadable, invalid YAML), or null. */
  problem: string | null;
  gateways: ManifestGateway[];
  /** Documents of this API group that are not AccessGateways (a misspelt kind): not used. */
  misspelt: string[];
}

/** One file: its AccessGateway documents and a list's AccessGateway items, each checked; other
 * kinds are skipped, but another kind of this API group is reported as misspelt. */
export function loadManifest(file: string): ManifestFile {
  let docs;
  try {
    docs = parseAllDocuments(readManifestText(file));
  } catch (err) {
    return { file, problem: oneLine(`cannot read: ${(err as Error).message}`), gateways: [], misspelt: [] };
  }
  const gateways: ManifestGateway[] = [];
  const misspelt: string[] = [];
  for (const [i, doc] of docs.entries()) {
    if (doc.errors.length) return { file, problem: oneLine(`document ${i + 1}: invalid YAML: ${doc.errors[0]!.message.split('\n')[0]}`), gateways: [], misspelt: [] };
    let top;
    try {
      top = doc.toJS(); // (throws for an alias bomb: "Excessive alias count")
    } catch (err) {
      return { file, problem: oneLine(`document ${i + 1}: invalid YAML: ${(err as Error).message.split('\n')[0]}`), gateways: [], misspelt: [] };
    }
    // a list (what `kubectl get -o yaml` writes): its items, each as a document
    const list = typeof top?.kind === 'string' && top.kind.endsWith('List') && Array.isArray(top.items);
    for (const [j, obj] of (list ? top.items : [top]).entries()) {
      const where = `document ${i + 1}${list ? `, item ${j + 1}` : ''}`;
      if (!obj || obj.kind !== kind) {
        // another kind of this API group is a misspelt AccessGateway, not someone else's object
        if (typeof obj?.apiVersion === 'string' && obj.apiVersion.startsWith(`${group}/`)) misspelt.push(oneLine(`${where}: kind ${JSON.stringify(obj.kind)} is not ${kind}: not used`));
        continue;
      }
      const ns = obj.metadata?.namespace;
      const name = obj.metadata?.name;
      const label = `${kind} ${ns ? `${ns}/` : ''}${name ?? `(${where})`}`;
      // without a namespace (or with "" or null): "default", as kubectl would put it
      obj.metadata = { ...obj.metadata, namespace: ns || 'default' };
      const key = `${obj.metadata.namespace}/${name}`;
      const problems = obj.apiVersion !== `${group}/${version}`
        ? [{ field: 'apiVersion', message: `must be ${group}/${version}, got ${JSON.stringify(obj.apiVersion)}` }]
        : validateGateway(obj);
      const named = typeof name === 'string' && name !== '';
      if (named && gateways.some((g) => g.named && g.key === key)) problems.push({ field: 'metadata.name', message: `${key} comes earlier in this file: this one is not used` });
      gateways.push({ label, key, named, object: obj, problems });
    }
  }
  return { file, problem: null, gateways, misspelt };
}

/** Which file names each gateway first, valid or not: its copy is the one used (validate and serve alike). */
export class FirstFiles {
  private readonly first = new Map<string, string>();

  /** The problem of `file`'s copy of `g` when an earlier file names it; else null (and, the first, noted). */
  claim(file: string, g: ManifestGateway): Problem | null {
    if (!g.named) return null; // (no copy of anything: its own problem says so)
    const earlier = this.first.get(g.key);
    if (earlier === undefined) this.first.set(g.key, file);
    return earlier === undefined || earlier === file ? null
      : { field: 'metadata.name', message: `${g.key} is in ${earlier} already: this one is not used` };
  }
}

/** A problem as one printable line: FILE: AccessGateway NS/NAME: FIELD: WHY (the name as written, escaped). */
export function problemLine(file: string, g: ManifestGateway, p: Problem): string {
  return oneLine(`${file}: ${g.label}: ${p.field}: ${p.message}`);
}
