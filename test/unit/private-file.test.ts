// Files only the user may read: written through a new 0600 file renamed into place; a token
// directory that is a link, or open to others, is refused or closed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { privateDir, writePrivate } from '../../src/cli/private-file.js';

test('writePrivate: 0600 even over a file that was 0644, never through a link, no leftovers', () => {
  const dir = mkdtempSync(join(tmpdir(), 'agw-private-'));
  const file = join(dir, 'kubeconfig');
  writeFileSync(file, 'old', { mode: 0o644 });
  chmodSync(file, 0o644);
  writePrivate(file, 'new');
  assert.equal(readFileSync(file, 'utf8'), 'new');
  assert.equal(statSync(file).mode & 0o777, 0o600);
  // a link in the file's place is replaced, its target untouched
  const target = join(dir, 'elsewhere');
  writeFileSync(target, 'theirs', { mode: 0o644 });
  const link = join(dir, 'linked');
  symlinkSync(target, link);
  writePrivate(link, 'mine');
  assert.equal(readFileSync(target, 'utf8'), 'theirs');
  assert.equal(readFileSync(link, 'utf8'), 'mine');
  assert.equal(statSync(link).mode & 0o777, 0o600);
  assert.deepEqual(readdirSync(dir).sort(), ['elsewhere', 'kubeconfig', 'linked']);
});

test('privateDir: made 0700; one open to others is closed; a link is refused', () => {
  const root = mkdtempSync(join(tmpdir(), 'agw-private-'));
  const made = join(root, 'a', 'oidc');
  privateDir(made);
  assert.equal(statSync(made).mode & 0o777, 0o700);
  const open = join(root, 'open');
  mkdirSync(open, { mode: 0o777 });
  chmodSync(open, 0o777);
  privateDir(open);
  assert.equal(statSync(open).mode & 0o777, 0o700);
  const link = join(root, 'link');
  symlinkSync(open, link);
  assert.throws(() => privateDir(link), /is not a directory of this user's/);
});
