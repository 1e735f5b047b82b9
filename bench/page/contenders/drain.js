/**
 * Reads a stream to its end, keeping nothing.
 * @param {ReadableStream<Uint8Array>} stream
 * @returns {Promise<number>} bytes read
 */
export async function drain(stream) {
  let bytes = 0;
  for await (const chunk of stream) bytes += chunk.byteLength;
  return bytes;
}
