// access-gateway validate -f FILE|DIR ...: one line per problem (file, object, field, why).
import { readFileSync } from 'node:fs';
import { manifestFiles } from '../api/manifests.js';
import { parseAllDocuments } from 'yaml';
import { validateGateway } from '../api/validate.js';
import { group, kind, version } from '../api/schema.js';

/** Problems as printable lines; empty when every AccessGateway in the files is valid. */
export function validateFiles(paths: string[]): { lines: string[]; gateways: number } {
  const lines: string[] = [];
  let gateways = 0;
  for (const file of manifestFiles(paths)) {
    let docs;
    try {
      docs = parseAllDocuments(readFileSync(file, 'utf8'));
    } catch (err) {
      lines.push(`${file}: cannot read: ${(err as Error).message}`);
      continue;
    }
    for (const [i, doc] of docs.entries()) {
      if (doc.errors.length) {
        lines.push(`${file}: document ${i + 1}: invalid YAML: ${doc.errors[0]!.message.split('\n')[0]}`);
        continue;
      }
      const obj = doc.toJS();
      if (!obj || obj.kind !== kind) continue;
      gateways++;
      const name = `${kind} ${obj.metadata?.namespace ? `${obj.metadata.namespace}/` : ''}${obj.metadata?.name ?? `(document ${i + 1})`}`;
      if (obj.apiVersion !== `${group}/${version}`) {
        lines.push(`${file}: ${name}: apiVersion: must be ${group}/${version}, got ${JSON.stringify(obj.apiVersion)}`);
        continue;
      }
      for (const p of validateGateway(obj)) lines.push(`${file}: ${name}: ${p.field}: ${p.message}`);
    }
  }
  return { lines, gateways };
}

export function runValidate(args: string[]): number {
  const paths: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '-f' || a === '--filename') {
      const v = args[++i];
      if (!v) throw new Error(`${a} needs a FILE or DIR`);
      paths.push(v);
    } else if (a.startsWith('--filename=')) {
      paths.push(a.slice('--filename='.length));
    } else {
      throw new Error(`validate: unknown argument ${a}`);
    }
  }
  if (!paths.length) throw new Error('validate: give at least one -f FILE|DIR');
  const { lines, gateways } = validateFiles(paths);
  for (const l of lines) console.log(l);
  if (lines.length) return 1;
  console.error(`${gateways} AccessGateway(s) valid`);
  return 0;
}
