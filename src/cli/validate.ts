// access-gateway validate -f FILE|DIR ...: one line per problem (file, object, field, why).
import { group, kind, version } from '../api/schema.js';
import { FirstFiles, loadManifest, manifestFiles, problemLine } from '../api/manifests.js';
import { printable } from '../printable.js';

/** Problems as printable lines; empty when every AccessGateway in the files is valid. */
export function validateFiles(paths: string[]): { lines: string[]; gateways: number } {
  const lines: string[] = [];
  let gateways = 0;
  const firsts = new FirstFiles();
  for (const file of manifestFiles(paths)) {
    const m = loadManifest(file);
    if (m.problem) lines.push(`${file}: ${m.problem}`);
    for (const x of m.misspelt) lines.push(`${file}: ${x}`);
    for (const g of m.gateways) {
      gateways++;
      const copy = firsts.claim(file, g);
      if (copy) g.problems.push(copy);
      for (const p of g.problems) lines.push(problemLine(file, g, p));
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
  if (!gateways) lines.push(`no AccessGateway (apiVersion ${group}/${version}, kind ${kind}) in ${paths.join(', ')}`);
  for (const l of lines) console.log(printable(l)); // (what the files hold, escaped)
  if (lines.length) return 1;
  console.error(`${gateways} AccessGateway(s) valid`);
  return 0;
}
