/**
 * Reads a stream to its end, keeping nothing: with a BYOB reader and one reused 1 MiB buffer
 * where the stream is a byte stream (walnut's getStream(), a Blob's stream() in Chromium and
 * Firefox), as a reader that wants flat memory would; else chunk by chunk.
 * @param {ReadableStream<Uint8Array>} stream
 * @returns {Promise<number>} bytes read
 */
export async function drain(stream) {
  let reader;
  // Held while read: in Chromium a Blob's byte stream with a BYOB read pending is reachable only
  // from that read's promise, and a collection (the live memory pass forces one every 100 ms)
  // takes it and the read never settles (see "Memory, round two" in docs/BENCHMARKS.md).
  reading.add(stream);
  try {
    reader = stream.getReader({ mode: 'byob' });
  } catch {
    reading.delete(stream);
    let bytes = 0;
    for await (const chunk of stream) bytes += chunk.byteLength;
    return bytes;
  }
  let bytes = 0;
  let buffer = new ArrayBuffer(1 << 20);
  try {
    for (;;) {
      const { done, value } = await reader.read(new Uint8Array(buffer));
      if (done) return bytes;
      bytes += value.byteLength;
      buffer = value.buffer;
    }
  } finally {
    reading.delete(stream);
  }
}

/** @type {Set<ReadableStream>} streams being read */
const reading = new Set();
