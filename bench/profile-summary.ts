// The top self-time functions of a V8 CPU profile (node --cpu-prof), as a Markdown table.
//   node profile-summary.js FILE.cpuprofile [N]
import { readFileSync } from 'node:fs';

interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number }

export function topSelfTime(profile: { nodes: Node[]; samples: number[]; timeDeltas: number[] }, n = 20): string[] {
  const total = profile.timeDeltas.reduce((a, b) => a + b, 0);
  const perSample = total / Math.max(1, profile.samples.length);
  const byName = new Map<string, number>();
  for (const node of profile.nodes) {
    const f = node.callFrame;
    const where = f.url ? `${f.url.replace(/^.*\/(node_modules|dist)\//, '$1/').replace(/^node:/, 'node:')}:${f.lineNumber + 1}` : '';
    const name = `${f.functionName || '(anonymous)'} ${where}`.trim();
    byName.set(name, (byName.get(name) ?? 0) + (node.hitCount ?? 0) * perSample);
  }
  return [...byName].sort((a, b) => b[1] - a[1]).slice(0, n)
    .map(([name, us]) => `| ${(100 * us / total).toFixed(1)}% | \`${name}\` |`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const p = JSON.parse(readFileSync(process.argv[2]!, 'utf8'));
  console.log('| self | function |\n| ---: | --- |');
  for (const l of topSelfTime(p, Number(process.argv[3] ?? 20))) console.log(l);
}
