// The demo page works as a person would use it: store a file, download it back with matching
// SHA-256, kill the worker mid-upload and see recovery.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setup } from './helpers.mjs';

let env;
let dir;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'walnut-e2e-demo-'));
  await writeFile(join(dir, 'small.bin'), randomBytes(3 * 1024 * 1024 + 5));
  const block = randomBytes(1024 * 1024);
  await writeFile(join(dir, 'large.bin'), Buffer.concat(Array.from({ length: 160 }, () => block)));
  env = await setup();
});
after(async () => {
  await env?.close();
  await rm(dir, { recursive: true, force: true });
});

test('the demo stores a file, downloads it with the same SHA-256, and survives a killed worker', async () => {
  const page = await env.context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(env.url);
  const message = () => page.textContent('#message');
  await page.waitForFunction(() => !document.querySelector('#file').disabled);

  await page.setInputFiles('#file', join(dir, 'small.bin'));
  await page.waitForFunction(() => /Download it/.test(document.querySelector('#message').textContent));
  assert.match(await page.textContent('#keys'), /small\.bin\s*3\.0 MiB/);
  const download = page.waitForEvent('download');
  await page.click('#keys button:has-text("Download")');
  assert.equal((await download).suggestedFilename(), 'small.bin');
  await page.waitForFunction(() => /identical|different/.test(document.querySelector('#keys').textContent));
  assert.match(await page.textContent('#keys'), /✓ identical/);

  await page.setInputFiles('#file', join(dir, 'large.bin'));
  // Click the kill button from the page, in the same moment the upload is seen under way.
  await page.waitForFunction(
    () => document.querySelector('#transfer-bar').value > 0.02 && (document.querySelector('#kill').click(), true),
    null,
    { polling: 10 },
  );
  await page.waitForFunction(() => /Reopened/.test(document.querySelector('#message').textContent));
  assert.match(await message(), /discarded 1 unfinished transaction/);
  const recovery = JSON.parse((await page.textContent('#recovery')).split('\n\n')[0]);
  assert.equal(recovery.discarded.length, 1);
  assert.doesNotMatch(await page.textContent('#keys'), /large\.bin/);
  assert.match(await page.textContent('#keys'), /small\.bin/);
  // Export: a download of the whole store as one walnut log, with its progress.
  const exported = page.waitForEvent('download');
  await page.click('#export');
  const file = await exported;
  assert.equal(file.suggestedFilename(), 'demo.walnut');
  const saved = join(dir, 'demo.walnut');
  await file.saveAs(saved);
  const head = (await readFile(saved)).subarray(0, 8).toString('latin1');
  assert.equal(head, 'WALNUTLG', 'the export is a walnut log');
  assert.match(await page.textContent('#export-numbers'), /exported/);
  // Import: refused while the store holds something (nothing changes), restored once emptied.
  const keysBefore = await page.textContent('#keys');
  await page.setInputFiles('#import-file', saved);
  await page.waitForFunction(() => /Export it first/.test(document.querySelector('#message').textContent));
  assert.equal(await page.textContent('#keys'), keysBefore);
  page.once('dialog', (dialog) => dialog.accept());
  await page.click('#empty');
  await page.waitForFunction(() => /The store is empty/.test(document.querySelector('#message').textContent));
  assert.doesNotMatch(await page.textContent('#keys'), /small\.bin/);
  await page.setInputFiles('#import-file', saved);
  await page.waitForFunction(() => /Imported demo\.walnut/.test(document.querySelector('#message').textContent));
  assert.match(await page.textContent('#keys'), /small\.bin\s*3\.0 MiB/);
  assert.match(await page.textContent('#import-numbers'), /imported/);
  assert.equal(await page.evaluate(() => document.querySelector('#import-bar').value), 1);
  assert.deepEqual(errors, []);
  await page.close();
});

test('the demo outbox: changes queued offline survive a reload, sync once online, nothing lost or sent twice', async () => {
  const page = await env.context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(env.url);
  await page.evaluate(() => localStorage.removeItem('walnut-demo-server'));
  await page.waitForFunction(() => !document.querySelector('#file').disabled);
  const queue = async (text) => {
    await page.fill('#outbox-text', text);
    await page.click('#outbox-form button');
    await page.waitForFunction((text) => document.querySelector('#outbox').textContent.includes(text), text);
  };
  for (const change of ['first', 'second', 'third']) await queue(change);
  assert.match(await page.textContent('#outbox-marks'), /last sequence number 3, flushed up to 0, 3 queued/);
  await page.reload();
  await page.waitForFunction(() => /3 queued/.test(document.querySelector('#outbox-marks').textContent));
  assert.match(await page.textContent('#outbox'), /first[\s\S]*second[\s\S]*third/);
  await page.check('#online');
  await page.waitForFunction(() => /flushed up to 3, 0 queued/.test(document.querySelector('#outbox-marks').textContent));
  assert.match(await page.textContent('#server'), /received 3 change\(s\) \(seq 1 to 3\), 0 duplicate/);
  await queue('fourth');
  await page.waitForFunction(() => /received 4 change/.test(document.querySelector('#server').textContent));
  await page.reload();
  await page.waitForFunction(() => /last sequence number 4, flushed up to 4, 0 queued/.test(document.querySelector('#outbox-marks').textContent));
  assert.match(await page.textContent('#server'), /received 4 change\(s\) \(seq 1 to 4\), 0 duplicate/);
  assert.deepEqual(errors, []);
  await page.close();
});
