// walnut demo: stream files into a store, list them, download them back with their SHA-256,
// and kill the worker mid-upload to watch recovery put the log right; and an outbox (a table's
// queue) that a sync loop drains to a simulated server, surviving reloads.
import { open } from '/pkg/walnut.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';

const STORE = 'demo';
const MiB = 1024 * 1024;

const $ = (id) => document.getElementById(id);

/** @type {import('/pkg/walnut.js').WalnutStore | null} null while (re)opening */
let store = null;
/** SHA-256 of each file as it was picked, by key; known for files stored in this session only. */
const originalHashes = new Map();
/** The upload in progress: its abort controller and whether the worker was killed under it. */
let upload = null;

/** @param {number} bytes */
function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < MiB) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1024 * MiB) return `${(bytes / MiB).toFixed(1)} MiB`;
  return `${(bytes / 1024 / MiB).toFixed(2)} GiB`;
}

/** @param {string | Uint8Array} key */
function formatKey(key) {
  if (typeof key === 'string') return key;
  return `0x${Array.from(key, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/**
 * Shows a status line.
 * @param {string | Error} text
 */
function say(text) {
  const isError = text instanceof Error;
  $('message').textContent = isError ? `${text.name}: ${text.message}` : text;
  $('message').classList.toggle('error', isError);
}

/**
 * SHA-256 of a stream, computed chunk by chunk (WebCrypto has no streaming digest).
 * @param {ReadableStream<Uint8Array>} stream
 * @param {(bytes: number) => void} onBytes
 */
async function sha256Of(stream, onBytes) {
  const hash = sha256.create();
  const reader = stream.getReader();
  let bytes = 0;
  for (let next; !(next = await reader.read()).done; ) {
    hash.update(next.value);
    bytes += next.value.length;
    onBytes(bytes);
  }
  return bytesToHex(hash.digest());
}

async function openStore() {
  store = null;
  $('file').disabled = true;
  const started = performance.now();
  const opened = await open(STORE);
  const took = performance.now() - started;
  $('recovery').textContent = `${JSON.stringify(opened.recovery, null, 2)}\n\nopen() took ${took.toFixed(0)} ms`;
  store = opened;
  $('file').disabled = false;
  await refresh();
  await showOutbox();
  return opened;
}

async function refresh() {
  if (!store) return;
  const [entries, stats] = await Promise.all([store.entries(), store.stats()]);
  $('keys').replaceChildren(...entries.map(row));
  $('stats').textContent =
    `${stats.keys} keys, ${formatSize(stats.liveBytes)} of values; ` +
    `log ${formatSize(stats.logBytes)}, chunk size ${formatSize(stats.chunkSize)}`;
}

/** @param {{ key: string | Uint8Array, size: number }} entry */
function row({ key, size }) {
  const tr = document.createElement('tr');
  const cell = (className, text = '') => {
    const td = tr.insertCell();
    td.className = className;
    td.textContent = text;
    return td;
  };
  cell('key', formatKey(key));
  cell('size', formatSize(size));
  const hash = cell('hash');
  const actions = cell('actions');
  const button = (label, action) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = label;
    b.onclick = () => action().catch(say);
    actions.append(b, ' ');
  };
  button('Download', () => download(key, size, hash));
  button('Delete', async () => {
    await store.delete(key);
    originalHashes.delete(formatKey(key));
    await refresh();
  });
  return tr;
}

/**
 * Saves the value as a file and shows its SHA-256, read back by streaming, next to the original's.
 * @param {string | Uint8Array} key
 * @param {number} size
 * @param {HTMLTableCellElement} cell
 */
async function download(key, size, cell) {
  const name = formatKey(key);
  const blob = await store.get(key);
  if (!blob) throw new Error(`${name} is gone`);
  const link = document.createElement('a');
  link.href = URL.createObjectURL(blob);
  link.download = name.split('/').pop();
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);

  const stored = await sha256Of(await store.getStream(key), (bytes) => {
    cell.textContent = `hashing… ${Math.floor((bytes / Math.max(size, 1)) * 100)}%`;
  });
  const original = originalHashes.get(name);
  const verdict = original === undefined ? '' : original === stored ? 'same' : 'differs';
  cell.replaceChildren(
    `stored:   ${stored}`,
    document.createElement('br'),
    `original: ${original ?? 'not known (stored in an earlier session)'}`,
  );
  if (verdict) {
    const mark = document.createElement('div');
    mark.className = verdict;
    mark.textContent = verdict === 'same' ? '✓ identical' : '✗ different';
    cell.append(mark);
  }
}

/** @param {Iterable<File>} files */
async function storeFiles(files) {
  $('file').disabled = true;
  try {
    for (const file of files) {
      if (!(await storeFile(file))) break;
    }
  } finally {
    $('file').disabled = !store;
  }
}

/**
 * Streams one file into the store under its name.
 * @param {File} file
 * @returns {Promise<boolean>} whether it was stored
 */
async function storeFile(file) {
  const current = { controller: new AbortController(), killed: false, written: 0 };
  upload = current;
  $('transfer').hidden = false;
  $('transfer-name').textContent = file.name;
  const started = performance.now();
  const showProgress = (written) => {
    current.written = written;
    const seconds = (performance.now() - started) / 1000;
    $('transfer-bar').value = file.size ? written / file.size : 1;
    $('transfer-numbers').textContent =
      `${formatSize(written)} of ${formatSize(file.size)}, ${(written / MiB / Math.max(seconds, 1e-3)).toFixed(0)} MiB/s`;
  };
  showProgress(0);
  say('');
  try {
    await store.put(file.name, file, { signal: current.controller.signal, onProgress: showProgress });
    const seconds = (performance.now() - started) / 1000;
    say(`Stored ${file.name}: ${formatSize(file.size)} in ${seconds.toFixed(2)} s. Hashing the original…`);
    await refresh();
    originalHashes.set(
      file.name,
      await sha256Of(file.stream(), (bytes) => {
        $('transfer-bar').value = file.size ? bytes / file.size : 1;
        $('transfer-numbers').textContent = `hashing the original: ${formatSize(bytes)}`;
      }),
    );
    say(`Stored ${file.name} (${formatSize(file.size)}, ${(file.size / MiB / seconds).toFixed(0)} MiB/s). Download it to compare hashes.`);
    return true;
  } catch (error) {
    if (current.killed) return false; // kill() reports
    if (error === current.controller.signal.reason) {
      say(`Cancelled ${file.name} at ${formatSize(current.written)}: the transaction was aborted, any old value is kept.`);
    } else {
      say(error);
    }
    await refresh();
    return false;
  } finally {
    upload = null;
    $('transfer').hidden = true;
  }
}

async function kill() {
  const current = upload;
  if (!current || !store) return;
  current.killed = true;
  store.terminate();
  say(`Worker killed at ${formatSize(current.written)}. Reopening…`);
  try {
    const reopened = await openStore();
    const { discarded, bytesTruncated } = reopened.recovery;
    say(
      `Worker killed at ${formatSize(current.written)}. Reopened: recovery discarded ` +
        `${discarded.length} unfinished transaction(s) and cut ${formatSize(bytesTruncated)} of torn tail; ` +
        'every value that was committed before is intact.',
    );
  } catch (error) {
    say(error);
  }
}

// ----- the outbox: a table's queue, a sync loop, a simulated server -----

/** The simulated server: the changes it received, by sequence number, in localStorage. */
const server = {
  load() {
    return JSON.parse(localStorage.getItem('walnut-demo-server') ?? '{"received":{},"duplicates":0}');
  },
  /** Stores a batch (idempotently: a seq seen before counts as a duplicate); returns the highest seq. */
  receive(changes) {
    const state = server.load();
    for (const { seq, value } of changes) {
      if (state.received[seq] !== undefined) state.duplicates += 1;
      state.received[seq] = value;
    }
    localStorage.setItem('walnut-demo-server', JSON.stringify(state));
    return Math.max(...changes.map((c) => c.seq));
  },
};

let syncing = false;

/** One round of the sync loop: send what lies above the flushed mark, then mark and trim. */
async function syncOutbox() {
  if (!store || syncing || !$('online').checked) return;
  syncing = true;
  try {
    const outbox = store.table('outbox');
    const from = (await outbox.flushedSeq) + 1;
    const pending = await outbox.read({ from, limit: 100, as: 'text' });
    if (pending.length > 0) {
      const acknowledged = server.receive(pending.map(({ seq, value }) => ({ seq, value })));
      await outbox.markFlushed(acknowledged);
      await outbox.deleteUpTo(acknowledged);
    }
  } finally {
    syncing = false;
  }
  await showOutbox();
}

async function showOutbox() {
  if (!store) return;
  const outbox = store.table('outbox');
  const [queued, last, flushed] = await Promise.all([outbox.read({ as: 'text' }), outbox.lastSeq, outbox.flushedSeq]);
  $('outbox').replaceChildren(
    ...queued.map(({ seq, value }) => {
      const tr = document.createElement('tr');
      tr.insertCell().textContent = String(seq);
      tr.insertCell().textContent = value;
      return tr;
    }),
  );
  $('outbox-marks').textContent = `last sequence number ${last}, flushed up to ${flushed}, ${queued.length} queued`;
  const state = server.load();
  const seqs = Object.keys(state.received).map(Number);
  $('server').textContent =
    `server received ${seqs.length} change(s)` +
    (seqs.length ? ` (seq ${Math.min(...seqs)} to ${Math.max(...seqs)})` : '') +
    `, ${state.duplicates} duplicate(s)`;
}

$('outbox-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = $('outbox-text').value;
  if (!store || !text) return;
  store
    .table('outbox')
    .append(text)
    .then((seq) => {
      $('outbox-text').value = '';
      say(`Queued "${text}" as change ${seq}.`);
      return showOutbox();
    })
    .catch(say);
});
$('online').addEventListener('change', () => syncOutbox().catch(say));
setInterval(() => syncOutbox().catch(say), 1000);

$('file').addEventListener('change', (event) => {
  const files = [...event.target.files];
  event.target.value = '';
  storeFiles(files);
});
/**
 * Makes `zone` take dropped files: `onFiles(files)` unless the input `input` is disabled.
 * @param {HTMLElement} zone
 * @param {HTMLInputElement} input
 * @param {(files: File[]) => void} onFiles
 */
function dropZone(zone, input, onFiles) {
  zone.addEventListener('dragover', (event) => {
    event.preventDefault();
    zone.classList.add('over');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (event) => {
    event.preventDefault();
    zone.classList.remove('over');
    if (!input.disabled) onFiles([...event.dataTransfer.files]);
  });
}
dropZone($('drop'), $('file'), storeFiles);
/**
 * Exports the store as one `.walnut` file and downloads it, with a progress bar (the size is
 * not known ahead: the bar follows the store's live bytes as an estimate).
 */
async function exportStore() {
  const bar = $('export-bar');
  const numbers = $('export-numbers');
  bar.hidden = false;
  const estimate = Math.max(1, (await store.stats()).liveBytes);
  const parts = [];
  const stream = store.export({
    onProgress: (bytes) => {
      bar.value = Math.min(1, bytes / estimate);
      numbers.textContent = formatSize(bytes);
    },
  });
  for await (const part of stream) parts.push(part);
  const blob = new Blob(parts, { type: 'application/octet-stream' });
  bar.value = 1;
  numbers.textContent = `${formatSize(blob.size)} exported`;
  const link = document.createElement('a');
  link.href = URL.createObjectURL(blob);
  link.download = `${STORE}.walnut`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}

/**
 * Restores a `.walnut` file into the store (which must be empty), with a progress bar: the file
 * is checked whole before it replaces anything (`store.import`).
 * @param {File} file
 */
async function importFile(file) {
  const bar = $('import-bar');
  const numbers = $('import-numbers');
  bar.hidden = false;
  bar.value = 0;
  $('import-file').disabled = true;
  try {
    const done = await store.import(file, {
      onProgress: (bytes) => {
        bar.value = bytes / Math.max(1, file.size);
        numbers.textContent = `${formatSize(bytes)} of ${formatSize(file.size)}`;
      },
    });
    numbers.textContent = `${formatSize(done.bytes)} imported`;
    say(`Imported ${file.name}: ${done.values} entries.`);
  } catch (error) {
    numbers.textContent = 'not imported';
    if (error.name === 'WalnutInvalidArgumentError' && /store/.test(error.message)) {
      throw new Error(`${error.message}. Export it first to keep what it holds, then empty it.`);
    }
    throw error;
  } finally {
    $('import-file').disabled = false;
    await refresh();
    await showOutbox();
  }
}

/** Deletes every key and drops every table, after asking. */
async function emptyStore() {
  if (!confirm('Delete every key and table of the demo store?')) return;
  await store.clear();
  for (const t of await store.tables()) if (t.name !== '') await store.dropTable(t.name);
  originalHashes.clear();
  say('The store is empty.');
  await refresh();
  await showOutbox();
}

$('export').addEventListener('click', () => exportStore().catch(say));
$('empty').addEventListener('click', () => emptyStore().catch(say));
$('import-file').addEventListener('change', (event) => {
  const [file] = event.target.files;
  event.target.value = '';
  if (file) importFile(file).catch(say);
});
dropZone($('import-drop'), $('import-file'), ([file]) => file && importFile(file).catch(say));
$('cancel').addEventListener('click', () => upload?.controller.abort(new DOMException('cancelled', 'AbortError')));
$('kill').addEventListener('click', kill);

openStore().catch((error) => {
  $('recovery').textContent = 'not open';
  say(error);
});
