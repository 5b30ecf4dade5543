import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';
import type { LogLevel } from '../config/server-config.js';

/**
 * Structured JSON logs on stderr; a readable form when stderr is a terminal
 * (or format "pretty"). Writes are synchronous so nothing is lost on exit.
 */
export function createLogger(level: LogLevel, format: 'auto' | 'json' | 'pretty'): Logger {
  const usePretty = format === 'pretty' || (format === 'auto' && process.stderr.isTTY === true);
  const base = { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  if (usePretty) {
    return pino(base, pretty({ destination: 2, sync: true, colorize: process.stderr.isTTY === true, ignore: 'pid,hostname' }));
  }
  return pino(base, pino.destination({ fd: 2, sync: true }));
}
