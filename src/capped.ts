// Reading an answer's body with a bound on its length (the apiserver's, an issuer's).

/** An answer past its bound. */
export class TooLarge extends Error {
  constructor(readonly maxBytes: number, what: string) {
    super(`${what}: the answer is longer than ${maxBytes} bytes`);
    this.name = 'TooLarge';
  }
}

/** `body` whole, or TooLarge (the body destroyed) once it passes `max` bytes; `onBytes` is told its length. */
export async function readCapped(body: AsyncIterable<Buffer> & { destroy(err?: Error): unknown }, max: number, what: string, onBytes?: (n: number) => void): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of body) {
    if ((n += chunk.length) > max) {
      body.destroy();
      throw new TooLarge(max, what);
    }
    parts.push(chunk);
  }
  onBytes?.(n);
  return Buffer.concat(parts, n);
}
