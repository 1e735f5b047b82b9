// Compiled (not run) by package.test.mjs: the declarations in pkg/walnut.d.ts must accept this
// usage and reject the lines marked @ts-expect-error.
import {
  open,
  WalnutError,
  WalnutLockedError,
  WalnutChangeEvent,
  WalnutLeaderChangedError,
  WalnutConflictError,
  type BatchOperation,
  type Transaction,
  type TransactionResult,
  type Entry,
  type RecoveryReport,
  type Stats,
  WalnutStore,
} from '../../../pkg/walnut.js';

export async function usage(file: File, stream: ReadableStream<Uint8Array>): Promise<void> {
  const db: WalnutStore = await open('app', { chunkSize: 65536, durability: 'relaxed', lockTimeout: 1000 });
  const report: RecoveryReport = db.recovery;
  const discarded: number = report.discarded.length;
  const controller = new AbortController();
  await db.put('text', 'hello');
  await db.put(new Uint8Array([1]), new Uint8Array(4), { durability: 'strict' });
  await db.put('file', file, {
    signal: controller.signal,
    onProgress: (written: number, total?: number) => console.log(written, total, discarded),
  });
  await db.put('stream', stream);
  await db.put('view', new DataView(new ArrayBuffer(8)));
  const blob: Blob | undefined = await db.get('text');
  const body: ReadableStream<Uint8Array> | undefined = await db.getStream('file');
  const existed: boolean = await db.delete('text', { durability: 'relaxed' });
  const has: boolean = await db.has('text');
  const keys: Array<string | Uint8Array> = await db.keys({ prefix: 'a', start: 'b', end: new Uint8Array([9]), limit: 3, reverse: true });
  const entries: Entry[] = await db.entries();
  const ops: BatchOperation[] = [
    { type: 'put', key: 'a', value: file },
    { type: 'delete', key: 'b' },
  ];
  await db.batch(ops, { durability: 'strict' });
  const stats: Stats = await db.stats();
  // What users of idb-keyval and the Durable Objects API reach for first.
  const text: string | undefined = await db.get('text', { as: 'text' });
  const bytes: Uint8Array | undefined = await db.get('text', { as: 'bytes' });
  const json: unknown = await db.get('config', { as: 'json' });
  const many: Array<string | undefined> = await db.getMany(['a', 'b'], { as: 'text' });
  await db.putMany([['a', 'x'], [new Uint8Array([2]), file]], { durability: 'relaxed' });
  await db.putMany({ a: 'x', b: new Uint8Array(1) });
  const deleted: number = (await db.deleteMany(['a', 'b'])) + (await db.clear());
  const withValues: Array<Entry<string>> = await db.entries({ prefix: 'user/', values: true, as: 'text' });
  for await (const entry of db.entries({ as: 'bytes' })) {
    const value: Uint8Array | undefined = entry.value;
    console.log(entry.key, value);
  }
  // @ts-expect-error: a listing cannot hold streams
  db.entries({ as: 'stream' });
  // @ts-expect-error: getMany takes an array of keys
  await db.getMany('a');
  console.log(text, bytes, json, many, deleted, withValues);
  const size: number = entries[0].size + stats.liveBytes + db.chunkSize;
  console.log(blob, body, existed, has, keys, size, db.name);
  await db.close();
  db.terminate();
  try {
    await open('other');
  } catch (error) {
    if (error instanceof WalnutLockedError) console.log(error.name satisfies string);
    if (error instanceof WalnutError) console.log(error.message);
  }

  // Every tab at once: change events, watch(), who leads.
  db.addEventListener('change', (event) => {
    const lsn: number = event.lsn;
    const keys: Array<string | Uint8Array> = [...event.puts, ...event.deletes];
    console.log(lsn, keys);
  });
  db.addEventListener('resync', (event) => console.log(event.reason satisfies string));
  const stop = new AbortController();
  db.watch({ prefix: 'user/', signal: stop.signal }, (event) => {
    if (event instanceof WalnutChangeEvent) console.log(event.puts);
    else console.log(event.reason);
  });
  const { leader, contexts } = await db.stats();
  console.log(leader satisfies boolean, contexts satisfies number);
  try {
    await db.put('k', new ReadableStream());
  } catch (error) {
    if (error instanceof WalnutLeaderChangedError) console.log('try again');
  }
  // @ts-expect-error a change event's lsn is a number
  db.addEventListener('change', (event) => event.lsn.toUpperCase());

  // @ts-expect-error numbers are not values
  await db.put('k', 42);
  // @ts-expect-error keys are strings or Uint8Array
  await db.get(7);
  // @ts-expect-error durability is 'strict' or 'relaxed'
  await db.put('k', 'v', { durability: 'eventual' });
  // @ts-expect-error limit is a number
  await db.keys({ limit: '3' });
  // @ts-expect-error batch operations need a type
  await db.batch([{ key: 'k', value: 'v' }]);
  // @ts-expect-error stores come from open()
  new WalnutStore();

  // Tables: namespaces with sequence numbers and a queue.
  const outbox = db.table('outbox');
  const seq: number = await outbox.append(new Blob(['change']));
  const putSeq: number = await outbox.put('k', 'v');
  const queued = await outbox.read({ from: seq, limit: 10, as: 'text' });
  for (const entry of queued) console.log(entry.seq satisfies number, entry.value satisfies string);
  for await (const { seq: s, value } of outbox.stream({ from: 1 })) console.log(s, value satisfies ReadableStream<Uint8Array>);
  await outbox.markFlushed(await outbox.lastSeq);
  await outbox.deleteUpTo(await outbox.flushedSeq);
  const ranges = await db.batch([
    { type: 'append', table: 'outbox', value: 'x' },
    { type: 'put', table: 'other', key: 'k', value: 'v' },
  ]);
  console.log(putSeq, ranges?.map((r) => r.first + r.last), (await db.tables()).map((t) => t.deletedUpTo), await db.dropTable('other'));
  for (const change of await outbox.changes({ since: 0, limit: 10 })) console.log(change.type satisfies 'put' | 'delete', change.current);
  for await (const change of outbox.follow({ since: 3, signal: stop.signal })) console.log(change.seq satisfies number);
  // @ts-expect-error an append names its table
  await db.batch([{ type: 'append', value: 'x' }]);
  // @ts-expect-error sequence numbers are numbers
  await outbox.deleteUpTo('3');

  // Transactions: read-modify-write, nesting, ids, conditional writes.
  const done: TransactionResult<number> = await db.transaction(
    async (tx: Transaction) => {
      const n = Number((await tx.get('n', { as: 'text' })) ?? '0');
      await tx.put('n', String(n + 1));
      await tx.transaction(async (inner) => inner.delete('tmp', { table: 'outbox' }));
      return n + 1;
    },
    { id: 'sync-17', durability: 'strict', retries: 3 },
  );
  if (done.applied) console.log(done.value satisfies number | undefined, done.version satisfies number);
  const version = await db.versionOf('n');
  await db.put('n', '5', { ifVersion: version });
  await db.delete('n', { ifVersion: null });
  const withVersion = await db.getWithVersion('n', { as: 'text' });
  console.log(withVersion?.value satisfies string | undefined);
  const once = await db.batch([{ type: 'put', key: 'k', value: 'v' }], { id: 'b-1', checks: [{ key: 'n', version: null }] });
  console.log(once.applied, once.seqs);
  console.log(new WalnutConflictError('x') instanceof WalnutError);
  // @ts-expect-error ifVersion is a number or null
  await db.put('n', '6', { ifVersion: '3' });
  // @ts-expect-error the callback gets a transaction
  await db.transaction(async (tx: number) => tx);
}
