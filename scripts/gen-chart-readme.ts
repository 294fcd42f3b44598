// Generates the values table of charts/access-gateway/README.md from the `# --` comments of the
// chart's values.yaml (helm-docs style), between <!-- values:start --> and <!-- values:end -->.
// `node --experimental-strip-types --no-warnings scripts/gen-chart-readme.ts` writes it;
// `... --check` exits 1 when the README is stale (a test runs it). AGW_CHART_DIR points it at
// another copy of the chart (the test checks an edited copy, never the repository's).
//
// Comment syntax, directly above a key (no blank line between):
//   # -- Description, continued on the following `#` lines.
//   # -- (bool) Description          an explicit type (needed when the default is null)
//   # @default -- text               shown instead of the value (Markdown)
// A documented map whose keys are not documented is one row (a free-form map such as
// podAnnotations or resources); a map whose keys are documented is not a row itself. Every key
// must be covered one way or the other: an undocumented key is an error.
import { readFileSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const chartDir = process.env.AGW_CHART_DIR || join(root, 'charts', 'access-gateway');
const start = '<!-- values:start -->';
const end = '<!-- values:end -->';

interface Doc { description: string; type?: string; default?: string }
interface Key { path: string[]; line: number; doc?: Doc }
export interface Row { key: string; type: string; default: string; description: string }

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function at(values: unknown, path: string[]): unknown {
  let v = values;
  for (const k of path) v = isMap(v) ? v[k] : undefined;
  return v;
}

/** The keys of values.yaml in file order, each with its `# --` comment. */
function scan(text: string, values: unknown): Key[] {
  const keys: Key[] = [];
  const stack: { indent: number; key: string }[] = [];
  let pending: Doc | undefined;
  let inDoc = false;
  let skipDeeperThan = -1; // inside a list or scalar block: lines indented more belong to a value
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\s+$/, '');
    const indent = line.length - line.trimStart().length;
    const t = line.trim();
    if (t === '') { pending = undefined; inDoc = false; return; }
    if (skipDeeperThan >= 0 && indent > skipDeeperThan) return;
    skipDeeperThan = -1;
    if (t.startsWith('#')) {
      const c = t.replace(/^#\s?/, '');
      const d = /^--\s*(?:\((\w+)\)\s*)?(.*)$/.exec(c);
      const def = /^@default\s+--\s*(.*)$/.exec(c);
      if (d) {
        pending = { description: d[2]!.trim(), ...(d[1] ? { type: d[1] } : {}) };
        inDoc = true;
      } else if (def && pending) {
        pending.default = def[1]!.trim();
      } else if (inDoc && pending) {
        pending.description = `${pending.description} ${c.trim()}`.trim();
      }
      return;
    }
    const m = /^([A-Za-z0-9_.\-/]+|"[^"]+"):(?:\s|$)/.exec(t);
    if (!m || t.startsWith('- ')) { pending = undefined; inDoc = false; return; }
    const key = m[1]!.replace(/^"(.*)"$/, '$1');
    while (stack.length && stack[stack.length - 1]!.indent >= indent) stack.pop();
    const path = [...stack.map((s) => s.key), key];
    keys.push({ path, line: i + 1, ...(pending ? { doc: pending } : {}) });
    pending = undefined;
    inDoc = false;
    const v = at(values, path);
    if (isMap(v) && Object.keys(v).length) stack.push({ indent, key });
    else skipDeeperThan = indent;
  });
  return keys;
}

function typeOf(v: unknown): string | undefined {
  if (typeof v === 'string') return 'string';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'float';
  if (Array.isArray(v)) return 'list';
  if (isMap(v)) return 'object';
  return undefined;
}

const cell = (s: string) => s.replace(/\|/g, '\\|');

/** The table rows, or the problems (undocumented keys, maps documented twice, unknown types). */
export function rows(text: string): { rows: Row[]; problems: string[] } {
  const values = parse(text) ?? {};
  const keys = scan(text, values);
  const byParent = new Map<string, Key[]>();
  for (const k of keys) {
    const parent = k.path.slice(0, -1).join('.');
    byParent.set(parent, [...(byParent.get(parent) ?? []), k]);
  }
  const out: Row[] = [];
  const problems: string[] = [];
  const visit = (k: Key) => {
    const name = k.path.join('.');
    const children = byParent.get(name) ?? [];
    const documentedChild = children.some((c) => c.doc);
    const v = at(values, k.path);
    if (k.doc) {
      if (documentedChild) {
        problems.push(`values.yaml:${k.line}: ${name}: document either the map or its keys, not both`);
        return;
      }
      const type = k.doc.type ?? typeOf(v);
      if (!type) problems.push(`values.yaml:${k.line}: ${name}: the default is null: give a type, "# -- (bool) ..."`);
      if (!k.doc.description) problems.push(`values.yaml:${k.line}: ${name}: empty description`);
      out.push({
        key: name, type: type ?? '', description: cell(k.doc.description),
        default: cell(k.doc.default ?? `\`${JSON.stringify(v)}\``),
      });
      return;
    }
    if (!children.length) {
      problems.push(`values.yaml:${k.line}: ${name} is not documented (add a "# --" comment above it)`);
      return;
    }
    children.forEach(visit);
  };
  (byParent.get('') ?? []).forEach(visit);
  const missing = Object.keys(isMap(values) ? values : {}).filter((k) => !keys.some((x) => x.path.length === 1 && x.path[0] === k));
  for (const k of missing) problems.push(`values.yaml: ${k}: key not found by the scanner (unusual formatting?)`);
  return { rows: out, problems };
}

export function table(r: Row[]): string {
  return [
    '| Key | Type | Default | Description |',
    '| --- | --- | --- | --- |',
    ...r.map((x) => `| \`${x.key}\` | ${x.type} | ${x.default} | ${x.description} |`),
  ].join('\n');
}

/** The README with its values table regenerated. */
export function render(readme: string, valuesText: string): { text: string; problems: string[] } {
  const { rows: r, problems } = rows(valuesText);
  const a = readme.indexOf(start);
  const b = readme.indexOf(end);
  if (a < 0 || b < a) return { text: readme, problems: [...problems, `README.md: markers ${start} / ${end} not found`] };
  const text = `${readme.slice(0, a + start.length)}\n<!-- generated by scripts/gen-chart-readme.ts from values.yaml: do not edit -->\n${table(r)}\n${readme.slice(b)}`;
  return { text, problems };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const readmeFile = join(chartDir, 'README.md');
  const readme = readFileSync(readmeFile, 'utf8');
  const { text, problems } = render(readme, readFileSync(join(chartDir, 'values.yaml'), 'utf8'));
  if (problems.length) {
    for (const p of problems) console.error(`${chartDir}/${p}`);
    process.exit(1);
  }
  if (text === readme) process.exit(0);
  if (process.argv.includes('--check')) {
    console.error(`${readmeFile}: the values table is stale: run node --experimental-strip-types --no-warnings scripts/gen-chart-readme.ts`);
    process.exit(1);
  }
  writeFileSync(readmeFile, text);
  console.log(`wrote ${readmeFile}`);
}
