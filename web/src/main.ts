// The dashboard shell: sign-in with an API key, the navigation, and a hash router (#/overview, #/images,
// #/images/<id>, #/upload, #/sql), so the server only ever serves index.html and hashed assets.
import './styles.css';
import { Api, ApiError, probe } from './api';
import { clear, h, notice } from './dom';
import { forgetKey, Session, storedKey, storeKey } from './session';
import { clearThumbs } from './thumbs';
import { renderConsole } from './views/console';
import { renderDetail } from './views/detail';
import { renderImages, resetImages } from './views/images';
import { renderOverview } from './views/overview';
import { renderUpload, resetUploads } from './views/upload';
import { errorNotice } from './views/common';

const app = document.getElementById('app')!;
let session: Session | null = null;

const pages: { path: string; label: string }[] = [
  { path: 'overview', label: 'Overview' },
  { path: 'images', label: 'Images' },
  { path: 'upload', label: 'Upload' },
  { path: 'sql', label: 'SQL' },
];

function signOut(message?: HTMLElement): void {
  forgetKey();
  session = null;
  clearThumbs();
  resetImages();
  resetUploads();
  showSignIn(message);
}

function showSignIn(message?: HTMLElement): void {
  clear(app);
  const input = h('input', { type: 'password', id: 'key', name: 'key', autocomplete: 'off', required: true,
    placeholder: 'imgp_…', 'data-testid': 'signin-key', spellcheck: 'false' });
  const status = h('div', { 'data-testid': 'signin-message' }, message ?? null);
  const button = h('button', { class: 'btn btn-primary', type: 'submit', 'data-testid': 'signin-submit' }, 'Sign in');
  const form = h('form', { class: 'signin', 'data-testid': 'signin-form' },
    h('div', { class: 'brand brand-big' }, h('span', { class: 'logo' }), 'imgpipe'),
    h('h1', {}, 'Sign in'),
    h('p', { class: 'muted' }, 'Paste an API key. It is kept for this browser tab only (sessionStorage) and sent as a ' +
      'bearer token with every request.'),
    h('label', { for: 'key' }, 'API key'), input, status, button);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    button.disabled = true;
    clear(status);
    try {
      await start(key);
    } catch (err) {
      clear(status);
      status.append(err instanceof ApiError && err.status === 401
        ? notice('error', 'This key was not accepted: ', err.message)
        : errorNotice(err));
    } finally {
      button.disabled = false;
    }
  });
  app.append(h('div', { class: 'signin-page' }, form));
  input.focus();
}

async function start(key: string): Promise<void> {
  const api = new Api(key);
  const caps = await probe(api);
  storeKey(key);
  session = { api, caps };
  api.onUnauthenticated = (e) => {
    if (session?.api === api) signOut(notice('error', 'The server no longer accepts this key: ', e.message));
  };
  if (!location.hash || location.hash === '#' || location.hash === '#/') {
    location.hash = caps.query ? '#/overview' : caps.listImages ? '#/images' : '#/upload';
  }
  route();
}

function shell(s: Session, active: string): HTMLElement {
  const main = h('main', { class: 'content', id: 'content' });
  const nav = h('nav', { class: 'nav' }, ...pages.map((p) =>
    h('a', { href: `#/${p.path}`, class: p.path === active ? 'active' : null, 'data-testid': `nav-${p.path}` },
      p.label)));
  const who = h('div', { class: 'who' },
    h('span', { class: 'badge badge-role', 'data-testid': 'role' }, s.caps.role),
    s.caps.keyId ? h('span', { class: 'muted small mono' }, s.caps.keyId) : null,
    h('button', { class: 'btn btn-small', type: 'button', 'data-testid': 'signout', onclick: () => signOut() },
      'Sign out'));
  clear(app);
  app.append(h('header', { class: 'topbar' }, h('a', { class: 'brand', href: '#/overview' }, h('span', { class: 'logo' }),
    'imgpipe'), nav, who), main);
  return main;
}

function route(): void {
  if (!session) return;
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean);
  const page = parts[0] ?? 'overview';
  const main = shell(session, page);
  switch (page) {
    case 'overview': renderOverview(main, session); break;
    case 'images':
      if (parts[1]) renderDetail(main, session, decodeURIComponent(parts[1])); else renderImages(main, session);
      break;
    case 'upload': renderUpload(main, session); break;
    case 'sql': renderConsole(main, session); break;
    default: main.append(notice('warn', `No page "${page}". `, h('a', { href: '#/overview' }, 'Go to the overview.')));
  }
  window.scrollTo(0, 0);
}

window.addEventListener('hashchange', route);

const key = storedKey();
if (key) {
  start(key).catch((e) => signOut(e instanceof ApiError && e.status === 401
    ? notice('error', 'The stored key is no longer accepted: ', e.message) : errorNotice(e)));
} else {
  showSignIn();
}
