import { ApiError, QueryResult } from '../api';
import { h, notice } from '../dom';
import { Session } from '../session';

/** The rows of a query result as objects keyed by column name. */
export function records(r: QueryResult): Record<string, unknown>[] {
  return r.rows.map((row) => Object.fromEntries(r.columns.map((c, i) => [c, row[i]])));
}

export function num(v: unknown): number {
  const n = typeof v === 'number' ? v : Number(v);
  return isFinite(n) ? n : 0;
}

export function errorNotice(e: unknown): HTMLElement {
  if (e instanceof ApiError) {
    return notice('error', h('strong', {}, e.status ? `${e.status} ${e.code}` : e.code), ': ', e.message,
      e.requestId ? h('span', { class: 'muted' }, ` (request ${e.requestId})`) : null);
  }
  return notice('error', String((e as Error)?.message ?? e));
}

/** The message shown where a feature needs the analyst SQL API and the key may not use it. */
export function needsAnalyst(s: Session, what: string): HTMLElement {
  return notice('warn', h('strong', {}, `${what} needs an admin or analyst key. `),
    `It runs analyst SQL (POST /v1/query), which this key's role, ${s.caps.role}, may not use. `,
    'Sign in with an analyst or admin key to see it.');
}

export function needsReader(s: Session, what: string): HTMLElement {
  return notice('warn', h('strong', {}, `${what} needs an admin or reader key. `),
    `This key has role ${s.caps.role}.`);
}

/** Date of an ISO time as the value of an <input type="datetime-local"> in UTC ("2026-01-10T12:00"). */
export function toLocalInput(d: Date): string {
  return d.toISOString().slice(0, 16);
}

/** The value of an <input type="datetime-local"> read as UTC. */
export function fromLocalInput(v: string): Date | null {
  if (!v) return null;
  const d = new Date(v.length === 16 ? `${v}:00Z` : `${v}Z`);
  return isNaN(d.getTime()) ? null : d;
}
