// Compiled (not run) by package.test.mjs: the declarations of the synchronous store, Node and
// Durable Objects must accept this usage and reject the lines marked @ts-expect-error.
import { openSync, SyncStore, WalnutLockedError, type SyncStats } from '../../../pkg/sync.js';
import { open as openNode, openSync as openNodeSync, type WalnutStore as NodeStore } from '../../../pkg/node.js';
import { openDurableObject, type DurableObjectStorageLike } from '../../../pkg/cloudflare.js';

export async function worker(file: File): Promise<void> {
  const db: SyncStore = await openSync('cache', { relaxedFlushMs: 250, durability: 'strict' });
  const queue: SyncStore = db.table('queue');
  const n: number = queue.append('job');
  const jobs = queue.read({ from: n, as: 'json' });
  queue.markFlushed(queue.lastSeq);
  queue.deleteUpTo(n);
  console.log(queue.changes({ since: n }).map((c) => c.key));
  console.log(jobs.map((j) => j.seq), db.batch([{ type: 'append', table: 'queue', value: 'x' }])[0]?.last, await queue.appendStream(new Blob(['b'])));
  db.put('k', 'v', { durability: 'relaxed' });
  const bytes: Uint8Array | undefined = db.get('k');
  const text: string | undefined = db.get('k', { as: 'text' });
  const many: Array<Uint8Array | undefined> = db.getMany(['a', 'b']);
  db.putMany({ a: '1', b: new Uint8Array(2) });
  const gone: number = db.deleteMany(['a']) + db.clear();
  for (const [key, value] of db.entries({ prefix: 'k', as: 'text' })) console.log(key, value);
  await db.putStream('file', file, { onProgress: (n) => console.log(n) });
  const stream: ReadableStream<Uint8Array> | undefined = db.getStream('file');
  const stats: SyncStats = db.stats();
  // @ts-expect-error: a synchronous put takes bytes or strings (a Blob goes through putStream)
  db.put('f', file);
  db.flush();
  db.close();
  console.log(bytes, text, many, gone, stream, stats.keys, WalnutLockedError.name);
}

export async function node(): Promise<void> {
  const db: NodeStore = await openNode('./data', { lockTimeout: 100 });
  await db.put('k', new Uint8Array(3));
  const value: string | undefined = await db.get('k', { as: 'text' });
  await db.flush();
  await db.close();
  const sync = openNodeSync('./data');
  sync.put('k', 'v');
  sync.close();
  console.log(value);
}

export function durableObject(storage: DurableObjectStorageLike): void {
  const db = openDurableObject(storage, { name: 'files', pageSize: 65536 });
  db.put('k', 'v');
  // @ts-expect-error: the page size is a number of bytes
  openDurableObject(storage, { pageSize: '64k' });
  db.close();
}
