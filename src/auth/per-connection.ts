// What was made from a client connection's last header (its token, the token's cache key): a
// keep-alive connection sends the same one again and again, so those requests cost a string
// comparison. Kept beside the connection (a WeakMap), so held only as long as the connection.
export function perConnection<T>(make: (input: string) => T): (input: string, conn?: object) => T {
  const memo = new WeakMap<object, { input: string; made: T }>();
  return (input, conn) => {
    if (!conn) return make(input);
    const last = memo.get(conn);
    if (last && last.input === input) return last.made;
    const made = make(input); // (one that throws keeps nothing)
    memo.set(conn, { input, made });
    return made;
  };
}
