// Manifest files named on the command line: files as given, directories' *.yaml/*.yml/*.json.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

export function manifestFiles(paths: string[]): string[] {
  return paths.flatMap((p) => {
    if (statSync(p).isDirectory()) {
      return readdirSync(p).filter((f) => /\.(ya?ml|json)$/.test(f)).sort().map((f) => join(p, f));
    }
    return [p];
  });
}
