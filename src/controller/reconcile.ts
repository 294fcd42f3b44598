// controller-runtime's reconcile contract: a key in, a result out; TerminalError is not retried.

export interface Result {
  requeueAfterMs?: number;
}

export class TerminalError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TerminalError';
  }
}

export type Reconciler = (key: string) => Promise<Result>;
