#!/usr/bin/env node
// access-gateway: checks the Node.js version before anything else is loaded (the dependencies
// fail in obscure ways on older ones), then runs the command.
export const minNodeMajor = 22;

const major = Number(process.versions.node.split('.')[0]);
if (major < minNodeMajor) {
  console.error(`access-gateway: Node.js ${minNodeMajor} or newer is required (this is ${process.version}); see README, "Quick start"`);
  process.exit(2);
}
// The heap grows by what survived the last full GC (2×), not by V8's dynamic factor (up to 4×):
// a burst of thousands of gateways otherwise leaves hundreds of MiB committed and never given
// back. Not less: at 1.5× a team's long answers ran a full GC every ~45 ms (docs/performance.md,
// stop 38). `node --heap-growing-percent=0` restores V8's own choice.
const v8 = await import('node:v8');
if (!process.execArgv.some((a) => /^--heap[-_]growing[-_]percent/.test(a))) v8.setFlagsFromString('--heap-growing-percent=100');
// Objects are never allocated straight into the old generation: after one burst of requests
// held at once (a first token check, a slow upstream), V8 would otherwise do that for every
// later request's objects too, and the data plane ran at half speed in full GCs
// (docs/performance.md). `node --allocation-site-pretenuring` restores it.
if (!process.execArgv.some((a) => /^--(no-)?allocation[-_]site[-_]pretenuring/.test(a))) v8.setFlagsFromString('--no-allocation-site-pretenuring');
const { main } = await import('./commands.js');
const { printable } = await import('../printable.js');
main(process.argv.slice(2)).then((code) => {
  if (code !== undefined) process.exitCode = code;
}, (err) => {
  // (a message may quote a server's answer: its control characters are escaped)
  console.error(`access-gateway: ${printable(err instanceof Error ? err.message : String(err))}`);
  process.exit(1);
});
