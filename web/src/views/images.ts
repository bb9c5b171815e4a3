// Images: a thumbnail grid over GET /v1/images (filters: time, source, status on the server; format in the
// browser), with cursor paging ("Load more").
import { Image, ImageFilter } from '../api';
import { clear, formatBytes, h } from '../dom';
import { Session } from '../session';
import { blobUrl, pickRendition } from '../thumbs';
import { errorNotice, needsReader } from './common';

const statuses = ['queued', 'processing', 'processed', 'failed', 'expired', 'deleted'];
const knownFormats = ['jpeg', 'png', 'webp', 'gif', 'tiff', 'heic', 'avif', 'jxl', 'bmp'];
const timePresets: [string, string, number][] = [
  ['any', 'Any time', 0], ['1h', 'Last hour', 1], ['24h', 'Last 24 h', 24], ['7d', 'Last 7 d', 168],
  ['30d', 'Last 30 d', 720],
];

interface GridState {
  time: string;
  source: string;
  status: string;
  format: string;
  items: Image[];
  cursor: string | null;
  loaded: boolean;
}

// Kept across page changes, so coming back from a detail view shows the same grid.
const state: GridState = { time: 'any', source: '', status: '', format: '', items: [], cursor: null, loaded: false };

export function resetImages(): void {
  Object.assign(state, { time: 'any', source: '', status: '', format: '', items: [], cursor: null, loaded: false });
}

function filter(): ImageFilter {
  const f: ImageFilter = { limit: 48 };
  const preset = timePresets.find((p) => p[0] === state.time);
  if (preset && preset[2] > 0) f.from = new Date(Date.now() - preset[2] * 3600_000).toISOString();
  if (state.source) f.source = state.source;
  if (state.status) f.status = state.status;
  return f;
}

function card(s: Session, image: Image): HTMLElement {
  const thumb = h('div', { class: 'thumb' });
  const r = pickRendition(image, 240);
  if (r) {
    const img = h('img', { alt: `${image.format} ${image.width}×${image.height}`, loading: 'lazy' });
    thumb.append(img);
    blobUrl(s.api, r.url).then((u) => { img.src = u; }, () => {
      thumb.classList.add('thumb-missing');
      img.remove();
      thumb.append(h('span', {}, 'no thumbnail'));
    });
  } else {
    thumb.classList.add('thumb-missing');
    thumb.append(h('span', {}, image.status === 'failed' ? 'failed' : image.status));
  }
  return h('a', {
    class: 'card', href: `#/images/${image.id}`, 'data-testid': 'image-card', 'data-id': image.id,
    'data-format': image.format, 'data-status': image.status,
  }, thumb, h('div', { class: 'card-text' },
    h('div', { class: 'card-line' }, h('strong', {}, image.format.toUpperCase()),
      h('span', { class: `badge badge-${image.status}` }, image.status)),
    h('div', { class: 'card-line muted small' }, `${image.width}×${image.height}`, h('span', {}, formatBytes(image.bytes))),
    h('div', { class: 'muted small' }, image.received_at.slice(0, 16).replace('T', ' '))));
}

export function renderImages(root: HTMLElement, s: Session): void {
  clear(root);
  root.append(h('div', { class: 'page-head' }, h('h1', {}, 'Images')));
  if (!s.caps.listImages) {
    root.append(needsReader(s, 'Browsing images'));
    return;
  }
  const select = (label: string, testid: string, options: [string, string][], value: string,
                  onchange: (v: string) => void) => {
    const el = h('select', { 'data-testid': testid, 'aria-label': label },
      ...options.map(([v, text]) => h('option', { value: v, selected: v === value }, text)));
    el.addEventListener('change', () => onchange(el.value));
    return h('label', { class: 'field' }, h('span', {}, label), el);
  };
  const sourceInput = h('input', { type: 'text', placeholder: 'any', value: state.source, list: 'sources',
    'data-testid': 'filter-source', size: 12 });
  const sourceList = h('datalist', { id: 'sources' });
  sourceInput.addEventListener('change', () => { state.source = sourceInput.value.trim(); reload(); });
  const formatSelect = select('Format', 'filter-format', [], state.format, (v) => { state.format = v; show(); });
  const bar = h('div', { class: 'filters' },
    select('Received', 'filter-time', timePresets.map(([v, t]) => [v, t]), state.time,
      (v) => { state.time = v; reload(); }),
    h('label', { class: 'field' }, h('span', {}, 'Source'), sourceInput, sourceList),
    select('Status', 'filter-status', [['', 'Any'], ...statuses.map((x) => [x, x] as [string, string])], state.status,
      (v) => { state.status = v; reload(); }),
    formatSelect,
    h('span', { class: 'spacer' }),
    h('button', { class: 'btn btn-small', type: 'button', onclick: () => reload() }, 'Refresh'));
  const count = h('p', { class: 'muted small', 'data-testid': 'grid-count' });
  const grid = h('div', { class: 'grid', 'data-testid': 'image-grid' });
  const more = h('button', { class: 'btn', type: 'button', 'data-testid': 'load-more', onclick: () => page() },
    'Load more');
  const message = h('div', {});
  root.append(bar, count, message, grid, h('div', { class: 'more' }, more));

  function fillFormats(): void {
    const sel = formatSelect.querySelector('select')!;
    const seen = new Set([...knownFormats, ...state.items.map((i) => i.format)]);
    clear(sel);
    sel.append(h('option', { value: '' }, 'Any'));
    for (const f of [...seen].sort()) sel.append(h('option', { value: f, selected: f === state.format }, f));
    clear(sourceList);
    for (const src of new Set(state.items.map((i) => i.source))) sourceList.append(h('option', { value: src }));
  }

  function show(): void {
    clear(grid);
    const shown = state.items.filter((i) => !state.format || i.format === state.format);
    for (const image of shown) grid.append(card(s, image));
    count.textContent = `${shown.length} shown` + (state.format ? ` (format ${state.format})` : '') +
      ` of ${state.items.length} loaded` + (state.cursor ? '; more on the server' : '');
    more.hidden = !state.cursor;
    if (state.loaded && shown.length === 0) {
      grid.append(h('p', { class: 'muted empty' }, state.items.length ? 'No loaded image has this format.' +
        (state.cursor ? ' Load more to look further.' : '') : 'No images match these filters.'));
    }
    fillFormats();
  }

  let generation = 0;
  async function page(): Promise<void> {
    const gen = generation;
    more.disabled = true;
    try {
      const res = await s.api.listImages({ ...filter(), cursor: state.cursor ?? undefined });
      if (gen !== generation) return;
      state.items.push(...res.items);
      state.cursor = res.next_cursor;
      state.loaded = true;
      clear(message);
    } catch (e) {
      clear(message);
      message.append(errorNotice(e));
    } finally {
      more.disabled = false;
    }
    show();
  }

  function reload(): void {
    generation++;
    state.items = [];
    state.cursor = null;
    state.loaded = false;
    clear(grid);
    count.textContent = 'loading…';
    page();
  }

  if (state.loaded) show(); else reload();
}
