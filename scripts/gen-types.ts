// Generates src/api/types.ts and src/api/schema.ts from the CRD, the single source of truth.
// `npm run gen` writes them; `npm run gen -- --check` fails when they differ (a test runs it).
import { readFileSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const crdFile = join(root, 'deploy', 'crds', 'access-gateway.io_accessgateways.yaml');

// Type names for schema locations; other objects are named after their parent and field.
const names: Record<string, string> = {
  '': 'AccessGateway',
  spec: 'AccessGatewaySpec',
  'spec.listener': 'Listener',
  'spec.listener.tls': 'ListenerTLS',
  'spec.authentication': 'Authentication',
  'spec.access[]': 'AccessRule',
  'spec.access[].serviceAccounts[]': 'ServiceAccountRef',
  'spec.routes[]': 'Route',
  'spec.routes[].apiserver': 'ApiserverUpstream',
  'spec.routes[].service': 'ServiceUpstream',
  'spec.routes[].service.caRef': 'CARef',
  'spec.rateLimit': 'RateLimit',
  status: 'AccessGatewayStatus',
  'status.listener': 'ListenerStatus',
  'status.routes[]': 'RouteStatus',
  'status.conditions[]': 'Condition',
};

type Schema = {
  type?: string; properties?: Record<string, Schema>; items?: Schema; required?: string[]; enum?: unknown[];
  description?: string; 'x-kubernetes-int-or-string'?: boolean; additionalProperties?: Schema | boolean;
  'x-kubernetes-validations'?: { rule: string }[];
};

/** The values of a string closed by a CEL rule `self in ['A', 'B']` (used instead of an enum
 * where the CRD wants its own message for a refused value). */
function celEnum(s: Schema): string[] | null {
  for (const v of s['x-kubernetes-validations'] ?? []) {
    const m = /^self in \[((?:'[^']*'(?:, )?)+)\]$/.exec(v.rule);
    if (m) return [...m[1]!.matchAll(/'([^']*)'/g)].map((x) => x[1]!);
  }
  return null;
}

function pascal(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function comment(desc: string | undefined, indent: string): string {
  if (!desc) return '';
  const lines = desc.trim().split('\n').map((l) => l.trimEnd());
  return `${indent}/**\n${lines.map((l) => `${indent} * ${l}`.trimEnd()).join('\n')}\n${indent} */\n`;
}

export function generate(): { types: string; schema: string } {
  const crd = parse(readFileSync(crdFile, 'utf8'));
  const version = crd.spec.versions.find((v: any) => v.storage);
  const top: Schema = version.schema.openAPIV3Schema;
  const decls: string[] = [];

  function typeOf(s: Schema, path: string, parentName: string, field: string): string {
    if (s['x-kubernetes-int-or-string']) return 'number | string';
    if (s.enum) return s.enum.map((e) => JSON.stringify(e)).join(' | ');
    const closed = s.type === 'string' ? celEnum(s) : null;
    if (closed) return closed.map((e) => JSON.stringify(e)).join(' | ');
    switch (s.type) {
      case 'string': return 'string';
      case 'integer': case 'number': return 'number';
      case 'boolean': return 'boolean';
      case 'array': return `${wrap(typeOf(s.items!, `${path}[]`, parentName, field))}[]`;
      case 'object': {
        if (!s.properties) {
          if (typeof s.additionalProperties === 'object') return `Record<string, ${typeOf(s.additionalProperties, `${path}.*`, parentName, field)}>`;
          return 'Record<string, unknown>';
        }
        const name = names[path] ?? `${parentName}${pascal(field)}`;
        declare(s, path, name);
        return name;
      }
      default: return 'unknown';
    }
  }
  function wrap(t: string): string {
    return t.includes('|') ? `(${t})` : t;
  }
  function declare(s: Schema, path: string, name: string): void {
    const fields: string[] = [];
    for (const [k, p] of Object.entries(s.properties ?? {})) {
      const childPath = path ? `${path}.${k}` : k;
      let t: string;
      if (path === '' && k === 'metadata') t = 'ObjectMeta';
      else t = typeOf(p, childPath, name, k);
      const opt = (s.required ?? []).includes(k) || (path === '' && k === 'metadata') ? '' : '?';
      fields.push(`${comment(p.description, '  ')}  ${k}${opt}: ${t};`);
    }
    decls.push(`${comment(s.description, '')}export interface ${name} {\n${fields.join('\n')}\n}\n`);
  }
  declare(top, '', 'AccessGateway');
  const header = '// Generated from deploy/crds/access-gateway.io_accessgateways.yaml by scripts/gen-types.ts.\n// Do not edit: change the CRD, then run `npm run gen`.\n';
  const meta = `export interface ObjectMeta {\n  name: string;\n  namespace: string;\n  uid?: string;\n  generation?: number;\n  resourceVersion?: string;\n  creationTimestamp?: string;\n  deletionTimestamp?: string;\n  labels?: Record<string, string>;\n  annotations?: Record<string, string>;\n  [key: string]: unknown;\n}\n`;
  const types = `${header}\n${meta}\n${decls.reverse().join('\n')}`;
  const schema = `${header}\nexport const group = ${JSON.stringify(crd.spec.group)};\nexport const version = ${JSON.stringify(version.name)};\nexport const kind = ${JSON.stringify(crd.spec.names.kind)};\nexport const plural = ${JSON.stringify(crd.spec.names.plural)};\n\n// The openAPIV3Schema of the served version (validation and defaults for files).\nexport const schema: Record<string, unknown> = ${JSON.stringify(top, null, 2)};\n`;
  return { types, schema };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const out = generate();
  const files = { [join(root, 'src', 'api', 'types.ts')]: out.types, [join(root, 'src', 'api', 'schema.ts')]: out.schema };
  let stale = false;
  for (const [file, text] of Object.entries(files)) {
    let old = '';
    try { old = readFileSync(file, 'utf8'); } catch { /* new */ }
    if (old === text) continue;
    if (process.argv.includes('--check')) {
      console.error(`${file} is stale: run npm run gen`);
      stale = true;
    } else {
      writeFileSync(file, text);
      console.log(`wrote ${file}`);
    }
  }
  if (stale) process.exit(1);
}
