// A real Prometheus for the tests: started on loopback with a given scrape config, queried through
// its HTTP API (/api/v1/query, /api/v1/targets).
import { mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { request } from 'undici';
import { prometheusBinary } from './prometheus.js';
import { freePort, startProc, waitFor, WaitAbort, type Proc } from './procs.js';

export interface Sample { metric: Record<string, string>; value: number }

export interface PrometheusProc extends Proc {
  url: string;
  dir: string;
  /** An instant query (at `time`, Unix seconds, else now); throws with Prometheus's error unless it succeeds. */
  query(expr: string, time?: number): Promise<{ resultType: string; result: Sample[] }>;
  /** The active targets of a scrape job (health, lastError). */
  targets(job: string): Promise<{ health: string; lastError: string }[]>;
}

/** Starts Prometheus with `scrapeConfigs` (YAML list items, already indented by 2) scraping every second. */
export async function startPrometheus(scrapeConfigs: string, files: Record<string, string> = {}): Promise<PrometheusProc> {
  const dir = mkdtempSync(join(tmpdir(), 'agw-prometheus-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text, { mode: 0o600 });
  writeFileSync(join(dir, 'prometheus.yml'), `global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n${scrapeConfigs}`);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = startProc(prometheusBinary(), [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], join(dir, 'prometheus.log'));
  try {
    await waitFor('prometheus /-/ready', async () => {
      if (proc.child.exitCode !== null) throw new WaitAbort(`prometheus exited ${proc.child.exitCode}; see ${proc.logFile}`);
      return (await (await request(`${url}/-/ready`)).body.text()).includes('Ready');
    }, 30_000, 200);
  } catch (err) {
    await proc.stop('SIGKILL');
    throw err;
  }
  const api = async (path: string): Promise<any> => {
    const r = await request(`${url}${path}`);
    const body = (await r.body.json()) as any;
    if (body.status !== 'success') throw new Error(`${path}: ${r.statusCode} ${body.errorType}: ${body.error}`);
    return body.data;
  };
  return Object.assign(proc, {
    url,
    dir,
    async query(expr: string, time?: number) {
      const data = await api(`/api/v1/query?query=${encodeURIComponent(expr)}${time === undefined ? '' : `&time=${time}`}`);
      const result = data.resultType === 'vector'
        ? data.result.map((r: any) => ({ metric: r.metric, value: Number(r.value[1]) }))
        : data.resultType === 'scalar' ? [{ metric: {}, value: Number(data.result[1]) }] : data.result;
      return { resultType: data.resultType, result };
    },
    async targets(job: string) {
      const data = await api('/api/v1/targets?state=active');
      return data.activeTargets.filter((t: any) => t.labels.job === job).map((t: any) => ({ health: t.health, lastError: t.lastError }));
    },
  });
}
