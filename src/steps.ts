// Work in steps: a generator that yields between pieces (translate's routes, a route table's),
// run at once, or with other work between its pieces (the event loop is every team's).

/** How a caller lets other work run between pieces: `turn` resolves when the next may run;
 * `held` is told each piece's time on the loop (to be charged). */
export interface Pace {
  turn(): Promise<void>;
  held(ms: number): void;
}

/** How long pieces may hold the loop before the next waits for a turn. */
const sliceMs = 1;

/** Runs `steps` to its end at once. */
export function runSteps<T>(steps: Generator<void, T, void>): T {
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
  }
}

/** Makes `steps` after a turn of `pace` and runs them, another turn whenever they have held the
 * loop `sliceMs`; every piece is told to `pace` (also when they throw). */
export async function inSteps<T>(make: () => Generator<void, T, void>, pace: Pace): Promise<T> {
  await pace.turn();
  let from = performance.now();
  try {
    const steps = make();
    for (;;) {
      const step = steps.next();
      if (step.done) return step.value;
      const now = performance.now();
      if (now - from >= sliceMs) {
        pace.held(now - from);
        await pace.turn();
        from = performance.now();
      }
    }
  } finally {
    pace.held(performance.now() - from);
  }
}
