// Thumbnails: renditions fetched with the bearer header (an <img src> cannot send it) and shown as blob: URLs.
// A small cache keyed by URL keeps them across page changes; clearThumbs() revokes them all (sign-out).
import { Api, Image, Rendition } from './api';

const cache = new Map<string, Promise<string>>();
const queue: (() => void)[] = [];
let running = 0;
const maxParallel = 4;

function next(): void {
  while (running < maxParallel && queue.length) {
    running++;
    queue.shift()!();
  }
}

/** A blob: URL for the bytes at `path` (fetched at most 4 at a time, once per path). */
export function blobUrl(api: Api, path: string): Promise<string> {
  let p = cache.get(path);
  if (!p) {
    p = new Promise<string>((resolve, reject) => {
      queue.push(() => {
        api.blob(path).then((b) => resolve(URL.createObjectURL(b)), (e) => {
          cache.delete(path);
          reject(e);
        }).finally(() => {
          running--;
          next();
        });
      });
      next();
    });
    cache.set(path, p);
  }
  return p;
}

export function clearThumbs(): void {
  for (const p of cache.values()) p.then((u) => URL.revokeObjectURL(u), () => {});
  cache.clear();
}

/** The rendition to show at about `px` wide: the smallest at least that wide, else the largest. */
export function pickRendition(image: Image, px: number): Rendition | null {
  const rs = [...image.renditions].sort((a, b) => a.width - b.width);
  return rs.find((r) => r.width >= px || r.height >= px) ?? rs[rs.length - 1] ?? null;
}
