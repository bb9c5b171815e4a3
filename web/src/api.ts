// The imgpipe HTTP API (docs/openapi.yaml) as the dashboard uses it. Every call carries the bearer key.
import type { Dialect } from './queries';

export class ApiError extends Error {
  keyId = '';  // X-Imgpipe-Key-Id of the answer, when the key was recognised

  constructor(readonly status: number, readonly code: string, message: string, readonly requestId = '') {
    super(message);
  }
}

export interface QueryResult {
  columns: string[];
  rows: unknown[][];
  truncated: boolean;
}

export interface Rendition {
  name: string;
  width: number;
  height: number;
  format: string;
  content_type: string;
  bytes: number;
  url: string;
}

export interface Image {
  id: string;
  status: string;
  sha256: string;
  bytes: number;
  format: string;
  content_type: string;
  width: number;
  height: number;
  frames: number;
  has_alpha: boolean;
  colour_space: string;
  has_icc: boolean;
  orientation: number | null;
  exif: {
    make: string | null;
    model: string | null;
    taken_at: string | null;
    gps: { lat: number; lon: number; alt: number | null } | null;
    lens_model: string | null;
    software: string | null;
  };
  metadata: Record<string, unknown>;
  source: string;
  source_ref: string | null;
  pipeline: string;
  received_at: string;
  processed_at: string | null;
  expires_at: string;
  expired_at: string | null;
  phash: string | null;
  dominant_colour: string | null;
  error: string | null;
  renditions: Rendition[];
}

export interface ImagePage {
  items: Image[];
  next_cursor: string | null;
}

export interface ImageFilter {
  from?: string;
  to?: string;
  source?: string;
  status?: string;
  limit?: number;
  cursor?: string;
}

async function errorFrom(res: Response): Promise<ApiError> {
  let code = 'http_' + res.status;
  let message = `${res.status} ${res.statusText}`;
  let requestId = res.headers.get('X-Request-Id') ?? '';
  try {
    const body = await res.json();
    if (body && body.error) {
      code = body.error.code ?? code;
      message = body.error.message ?? message;
      requestId = body.error.request_id ?? requestId;
    }
  } catch {
    // not JSON: keep the status line
  }
  const err = new ApiError(res.status, code, message, requestId);
  err.keyId = res.headers.get('X-Imgpipe-Key-Id') ?? '';
  return err;
}

export class Api {
  /** Called when the server refuses the key (401), e.g. after it was revoked. */
  onUnauthenticated: (e: ApiError) => void = () => {};

  constructor(readonly key: string) {}

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return { Authorization: `Bearer ${this.key}`, ...extra };
  }

  async fetch(method: string, path: string, body?: unknown): Promise<Response> {
    const init: RequestInit = { method, headers: this.headers(), cache: 'no-store' };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = this.headers({ 'Content-Type': 'application/json' });
    }
    let res: Response;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'network', `imgpipe did not answer (${(e as Error).message})`);
    }
    if (!res.ok) {
      const err = await errorFrom(res);
      if (res.status === 401) this.onUnauthenticated(err);
      throw err;
    }
    return res;
  }

  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    return (await this.fetch(method, path, body)).json() as Promise<T>;
  }

  /** POST /v1/query: one read-only statement, ?1.. bound from params. */
  query(sql: string, params: unknown[] = []): Promise<QueryResult> {
    return this.json<QueryResult>('POST', '/v1/query', { sql, params, format: 'json' });
  }

  /** The same query as CSV (UTF-8, CRLF lines, a header row), for Excel and Power BI. */
  async queryCsv(sql: string, params: unknown[] = []): Promise<Blob> {
    const res = await this.fetch('POST', '/v1/query', { sql, params, format: 'csv' });
    return res.blob();
  }

  listImages(f: ImageFilter): Promise<ImagePage> {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(f)) {
      if (v !== undefined && v !== '') q.set(k, String(v));
    }
    return this.json<ImagePage>('GET', `/v1/images?${q}`);
  }

  getImage(id: string): Promise<Image> {
    return this.json<Image>('GET', `/v1/images/${encodeURIComponent(id)}`);
  }

  /** The bytes behind a URL of this API (a rendition or the original), fetched with the key. */
  async blob(path: string): Promise<Blob> {
    return (await this.fetch('GET', path)).blob();
  }

  /**
   * POST /v1/images as multipart/form-data (a "file" part and a "metadata" part with the file's name), with upload
   * progress. Resolves with the 201 body; rejects with ApiError for any other answer.
   */
  upload(file: File, onProgress: (sent: number, total: number) => void): { done: Promise<Image>; abort: () => void } {
    const xhr = new XMLHttpRequest();
    const done = new Promise<Image>((resolve, reject) => {
      xhr.open('POST', '/v1/images');
      xhr.setRequestHeader('Authorization', `Bearer ${this.key}`);
      xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
      xhr.onerror = () => reject(new ApiError(0, 'network', 'the upload was cut off (network error)'));
      xhr.onabort = () => reject(new ApiError(0, 'aborted', 'upload cancelled'));
      xhr.onload = () => {
        let body: any = null;
        try {
          body = JSON.parse(xhr.responseText);
        } catch {
          // keep null
        }
        if (xhr.status === 201 || xhr.status === 200) {
          resolve(body as Image);
          return;
        }
        const err = new ApiError(xhr.status, body?.error?.code ?? `http_${xhr.status}`,
          body?.error?.message ?? `${xhr.status} ${xhr.statusText}`, body?.error?.request_id ?? '');
        if (xhr.status === 401) this.onUnauthenticated(err);
        reject(err);
      };
      const form = new FormData();
      form.append('metadata', new Blob([JSON.stringify({ filename: file.name })], { type: 'application/json' }));
      form.append('file', file, file.name);
      xhr.send(form);
    });
    return { done, abort: () => xhr.abort() };
  }
}

/** What a key may do, found out by asking (the API has no "who am I"). */
export interface Capabilities {
  listImages: boolean;  // reader, admin
  query: boolean;       // analyst, admin
  role: string;         // derived: admin, reader, analyst or uploader
  keyId: string;
  dialect: Dialect;     // of the warehouse behind POST /v1/query (sqlite when the key may not query)
}

/** Checks the key and finds what it may do. Throws ApiError 401 for an unknown or revoked key. */
export async function probe(api: Api): Promise<Capabilities> {
  const can = async (f: () => Promise<Response>): Promise<{ ok: boolean; keyId: string }> => {
    try {
      const res = await f();
      return { ok: true, keyId: res.headers.get('X-Imgpipe-Key-Id') ?? '' };
    } catch (e) {
      if (e instanceof ApiError && e.status === 403) return { ok: false, keyId: e.keyId };
      throw e;
    }
  };
  const list = await can(() => api.fetch('GET', '/v1/images?limit=1'));
  const query = await can(() => api.fetch('POST', '/v1/query', { sql: 'SELECT 1 AS ok', format: 'json' }));
  const role = list.ok && query.ok ? 'admin' : list.ok ? 'reader' : query.ok ? 'analyst' : 'uploader';
  const dialect = query.ok ? await detectDialect(api) : 'sqlite';
  return { listImages: list.ok, query: query.ok, role, keyId: list.keyId || query.keyId, dialect };
}

/** SQLite answers sqlite_version(); PostgreSQL refuses it (400) and answers version(). */
async function detectDialect(api: Api): Promise<Dialect> {
  try {
    await api.query('SELECT sqlite_version() AS v');
    return 'sqlite';
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 400) throw e;
  }
  const r = await api.query('SELECT version() AS v');
  return String(r.rows[0]?.[0] ?? '').startsWith('PostgreSQL') ? 'postgres' : 'sqlite';
}
