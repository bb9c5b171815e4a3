// Upload: drag and drop (or pick) files; each goes to POST /v1/images with upload progress, then its status is
// polled until it is processed or failed.
import { ApiError } from '../api';
import { clear, formatBytes, h } from '../dom';
import { Session } from '../session';

interface Row {
  file: File;
  el: HTMLElement;
  bar: HTMLElement;
  status: HTMLElement;
  link: HTMLElement;
}

// Uploads outlive page changes: the rows stay in this list and their requests keep running.
const list = h('div', { class: 'uploads', 'data-testid': 'upload-list' });
const pollMs = 1000;
const pollLimitMs = 10 * 60_000;

function setStatus(row: Row, state: string, text: string): void {
  row.el.dataset.state = state;
  row.status.textContent = text;
  row.status.className = `upload-status badge badge-${state}`;
}

async function follow(s: Session, row: Row, id: string): Promise<void> {
  const started = Date.now();
  row.link.replaceChildren(h('a', { href: `#/images/${id}`, class: 'mono small' }, id));
  for (;;) {
    try {
      const image = await s.api.getImage(id);
      if (image.status === 'processed') {
        setStatus(row, 'processed', 'processed');
        return;
      }
      if (image.status === 'failed') {
        setStatus(row, 'failed', `failed: ${image.error ?? 'no reason given'}`);
        return;
      }
      setStatus(row, image.status, image.status);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        setStatus(row, 'failed', e.message);
        return;
      }
      // A passing network problem: keep polling.
    }
    if (Date.now() - started > pollLimitMs) {
      setStatus(row, 'queued', 'still not processed after 10 minutes; check later in Images');
      return;
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

function start(s: Session, file: File): void {
  const bar = h('div', { class: 'progress-bar' });
  const status = h('span', { class: 'upload-status badge', 'data-testid': 'upload-status' }, 'waiting');
  const link = h('span', {});
  const el = h('div', { class: 'upload-row', 'data-testid': 'upload-row', 'data-name': file.name },
    h('div', { class: 'upload-name' }, h('strong', {}, file.name), h('span', { class: 'muted small' },
      ` ${formatBytes(file.size)}`)),
    h('div', { class: 'progress' }, bar),
    status, link);
  list.querySelector('.empty')?.remove();
  list.prepend(el);
  const row: Row = { file, el, bar, status, link };
  setStatus(row, 'uploading', 'uploading 0%');
  const up = s.api.upload(file, (sent, total) => {
    const pct = total ? Math.min(100, Math.round((sent / total) * 100)) : 0;
    bar.style.width = `${pct}%`;  // CSSOM, allowed by the CSP
    setStatus(row, 'uploading', `uploading ${pct}%`);
  });
  up.done.then((accepted) => {
    bar.style.width = '100%';
    setStatus(row, accepted.status, accepted.status);
    return follow(s, row, accepted.id);
  }, (e: ApiError) => {
    el.classList.add('refused');
    setStatus(row, 'refused', e.status ? `refused (${e.status} ${e.code}): ${e.message}` : e.message);
  });
}

export function renderUpload(root: HTMLElement, s: Session): void {
  clear(root);
  root.append(h('div', { class: 'page-head' }, h('h1', {}, 'Upload')));
  const input = h('input', { type: 'file', multiple: true, accept: 'image/*', 'data-testid': 'file-input',
    class: 'visually-hidden', id: 'file-input' });
  input.addEventListener('change', () => {
    for (const f of Array.from(input.files ?? [])) start(s, f);
    input.value = '';
  });
  const zone = h('div', { class: 'dropzone', 'data-testid': 'dropzone', tabindex: 0, role: 'button',
    'aria-label': 'Drop image files here, or press Enter to choose files' },
  h('div', { class: 'dropzone-title' }, 'Drop images here'),
  h('div', { class: 'muted' }, 'or ', h('label', { for: 'file-input', class: 'linkish' }, 'choose files'),
    '. Each file is one POST /v1/images, with your key.'),
  input);
  zone.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      input.click();
    }
  });
  let depth = 0;
  zone.addEventListener('dragenter', (e) => {
    e.preventDefault();
    depth++;
    zone.classList.add('over');
  });
  zone.addEventListener('dragover', (e) => {
    e.preventDefault();
    if (e.dataTransfer) e.dataTransfer.dropEffect = 'copy';
  });
  zone.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (!depth) zone.classList.remove('over');
  });
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    depth = 0;
    zone.classList.remove('over');
    for (const f of Array.from(e.dataTransfer?.files ?? [])) start(s, f);
  });
  root.append(zone, h('h2', { class: 'section-title' }, 'This session\'s uploads'), list);
  if (!list.childElementCount) list.append(h('p', { class: 'muted empty' }, 'Nothing uploaded yet.'));
}

/** Forgets the upload rows (sign-out). */
export function resetUploads(): void {
  clear(list);
}
