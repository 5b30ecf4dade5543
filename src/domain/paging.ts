import { invalidArgument } from './errors.js';

export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;

/** 0 means the default; anything outside 0..MAX_PAGE_SIZE is rejected. */
export function parsePageSize(value: number, field = 'page_size'): number {
  if (!Number.isInteger(value) || value < 0 || value > MAX_PAGE_SIZE) {
    throw invalidArgument(field, `must be between 0 and ${MAX_PAGE_SIZE}`);
  }
  return value === 0 ? DEFAULT_PAGE_SIZE : value;
}

/**
 * Page tokens are opaque to clients: base64url of the last key returned.
 * Pure helpers so the store and its tests agree on the encoding.
 */
export function encodePageToken(lastKey: string): string {
  return base64UrlEncode(lastKey);
}

export function decodePageToken(token: string, field = 'page_token'): string | undefined {
  if (token === '') return undefined;
  if (!/^[A-Za-z0-9_-]+$/.test(token)) throw invalidArgument(field, 'is not a token from a previous page');
  const decoded = base64UrlDecode(token);
  if (decoded === undefined || decoded.length === 0) {
    throw invalidArgument(field, 'is not a token from a previous page');
  }
  return decoded;
}

// Written without Buffer so the domain stays free of Node-specific APIs.
function base64UrlEncode(text: string): string {
  const bytes = new TextEncoder().encode(text);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function base64UrlDecode(token: string): string | undefined {
  try {
    const bin = atob(token.replace(/-/g, '+').replace(/_/g, '/'));
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return undefined;
  }
}
