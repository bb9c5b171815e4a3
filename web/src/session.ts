// The signed-in key, kept in sessionStorage only: it lives as long as the browser tab and is never written to
// localStorage, cookies or the URL.
import { Api, Capabilities } from './api';

const storageKey = 'imgpipe.dashboard.key';

export interface Session {
  api: Api;
  caps: Capabilities;
}

export function storedKey(): string | null {
  return sessionStorage.getItem(storageKey);
}

export function storeKey(key: string): void {
  sessionStorage.setItem(storageKey, key);
}

export function forgetKey(): void {
  sessionStorage.removeItem(storageKey);
}
