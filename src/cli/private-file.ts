// Files only the user may read (kubeconfigs, the token cache): written whole or not at all.
import { randomBytes } from 'node:crypto';
import { chmodSync, lstatSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';

/** Writes `text` to `path` with mode 0600: a new file (never through a link, never a file that
 * was there with other modes) renamed over the old one, so a reader never sees half of it. */
export function writePrivate(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600, flag: 'wx' });
  try {
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

/** Makes `dir` (0700) if missing; refuses one that is a link or another user's (its files could be
 * planted or read), and takes group and other access off one of the user's own. */
export function privateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  if (!st.isDirectory() || (process.getuid !== undefined && st.uid !== process.getuid())) {
    throw new Error(`${dir} is not a directory of this user's (a link, or another user's): refusing to keep tokens there`);
  }
  if (st.mode & 0o077) chmodSync(dir, 0o700);
}
