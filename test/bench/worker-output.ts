import type { ChildProcess } from 'node:child_process';

/**
 * What a benchmark's worker process printed on stdout as JSON, once it exited 0. A bad exit, or
 * output that is not JSON (a worker that ended early), rejects: the benchmark's own cleanup then
 * stops the servers it started (an exception thrown in the exit handler skipped it and left them
 * running behind the next benchmarks).
 */
export function workerOutput<T>(child: ChildProcess, name: string, timeoutMs?: number): Promise<T> {
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`${name} exited ${code}`));
      try {
        resolve(JSON.parse(out) as T);
      } catch {
        reject(new Error(`${name} printed no result: ${JSON.stringify(out.slice(0, 200))}`));
      }
    });
  });
}
