// Where prometheus, promtool and the Prometheus Operator CRDs (crds/) are: PROMETHEUS_ASSETS, else
// scripts/build-prometheus.sh builds them once into the cache outside the repository.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from './control-plane.js';

let assets: string | undefined;

export function prometheusAssets(): string {
  assets ??= process.env.PROMETHEUS_ASSETS ?? execFileSync(join(repoRoot, 'scripts', 'build-prometheus.sh'), { encoding: 'utf8' }).trim().split('\n').pop()!;
  return assets;
}

export const promtool = (): string => join(prometheusAssets(), 'promtool');
export const prometheusBinary = (): string => join(prometheusAssets(), 'prometheus');
export const operatorCRDs = (): string => join(prometheusAssets(), 'crds');
