// Outpost's one script: progressive enhancement for the server-rendered pages. Everything
// from the server that is not our own markup is put in the page as text (textContent),
// never as HTML.
'use strict';

// Live parts: an element with data-live="/events/…" is replaced by each `update` event.
function live() {
  document.querySelectorAll('[data-live]').forEach((el) => {
    const es = new EventSource(el.dataset.live);
    // The server renders and escapes this fragment itself.
    es.addEventListener('update', (e) => { el.innerHTML = e.data; });
    // What it follows has ended (a run): nothing more will change, so no reconnecting.
    es.addEventListener('end', () => { es.close(); });
  });
}

// Forms that ask before they act.
function confirms() {
  document.querySelectorAll('form[data-confirm]').forEach((f) => {
    f.addEventListener('submit', (e) => { if (!window.confirm(f.dataset.confirm)) e.preventDefault(); });
  });
}

// A file input that fills a textarea (playbook upload).
function fills() {
  document.querySelectorAll('input[type=file][data-fill]').forEach((input) => {
    input.addEventListener('change', async () => {
      const file = input.files && input.files[0];
      if (file) document.getElementById(input.dataset.fill).value = await file.text();
    });
  });
}

// The launch form: show the chosen way of picking servers; preview a selector as it is typed.
function launch() {
  const form = document.getElementById('launch');
  if (!form) return;
  const sync = () => {
    const filter = form.querySelector('input[name=target][value=filter]').checked;
    form.classList.toggle('target-filter', filter);
    form.classList.toggle('target-names', !filter);
  };
  form.querySelectorAll('input[name=target]').forEach((r) => r.addEventListener('change', sync));
  sync();
  const out = document.getElementById('preview');
  let timer = null;
  const preview = async () => {
    const q = new URLSearchParams({
      environment: form.querySelector('#environment').value,
      selector: form.querySelector('#selector').value,
    });
    const r = await fetch('/jobs/preview?' + q, { credentials: 'same-origin' });
    out.innerHTML = await r.text(); // rendered and escaped by the server
  };
  ['#environment', '#selector'].forEach((s) => form.querySelector(s).addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(preview, 300);
  }));
  document.getElementById('preview-button').addEventListener('click', (e) => { e.preventDefault(); preview(); });
}

// The job page: status kept current, and the log viewer. Only the lines on screen are in the
// page; the rest are read from the API a page at a time when they scroll into view.
function job() {
  const view = document.getElementById('log-view');
  if (!view) return;
  const id = view.dataset.job;
  const api = `/api/v1/jobs/${id}`;
  const PAGE = 500;
  const rowH = () => parseFloat(getComputedStyle(view).lineHeight) || 18;
  const spacer = document.getElementById('log-spacer');
  const rows = document.getElementById('log-rows');
  const count = document.getElementById('log-count');
  const note = document.getElementById('log-note');
  const follow = document.getElementById('log-follow');
  const pages = new Map(); // page index -> array of lines, or a promise while loading
  let total = parseInt(view.dataset.last, 10) || 0;
  let final = view.dataset.final === 'true';
  let hit = 0;
  let queued = false;

  const size = () => {
    spacer.style.height = `${total * rowH()}px`;
    count.textContent = `${total} lines`;
  };
  const load = (p) => {
    if (pages.has(p)) return;
    const pending = fetch(`${api}/logs?after=${p * PAGE}&limit=${PAGE}`, { credentials: 'same-origin' })
      .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
      .then((page) => {
        const lines = pages.get(p) instanceof Array ? pages.get(p) : [];
        page.lines.forEach((l) => { lines[l.line_number - 1 - p * PAGE] = l; });
        pages.set(p, lines);
        if (page.last_line > total) { total = page.last_line; size(); }
        draw();
      })
      .catch(() => { pages.delete(p); });
    pages.set(p, pending);
  };
  const line = (n) => {
    const p = Math.floor((n - 1) / PAGE);
    const lines = pages.get(p);
    if (!(lines instanceof Array)) { load(p); return null; }
    const l = lines[(n - 1) % PAGE];
    // A page read while the job was still writing may end early: read it again.
    if (!l && n <= total && lines.length < PAGE) { pages.delete(p); load(p); }
    return l || null;
  };
  const render = () => {
    queued = false;
    const h = rowH();
    const first = Math.max(1, Math.floor(view.scrollTop / h) + 1);
    const last = Math.min(total, first + Math.ceil(view.clientHeight / h) + 5);
    rows.style.top = `${(first - 1) * h}px`;
    const frag = document.createDocumentFragment();
    for (let n = first; n <= last; n += 1) {
      const l = line(n);
      const div = document.createElement('div');
      div.className = 'ln' + (l && l.level ? ` lv-${l.level}` : '') + (n === hit ? ' hit' : '');
      div.dataset.line = String(n);
      const no = document.createElement('span');
      no.className = 'no';
      no.textContent = String(n);
      div.append(no, document.createTextNode(l ? l.content : ''));
      frag.append(div);
    }
    rows.replaceChildren(frag);
  };
  const draw = () => { if (!queued) { queued = true; requestAnimationFrame(render); } };
  const jump = (n) => {
    hit = n;
    view.scrollTop = Math.max(0, (n - 1) * rowH() - view.clientHeight / 3);
    draw();
  };
  view.addEventListener('scroll', () => {
    const atEnd = view.scrollTop + view.clientHeight >= view.scrollHeight - 2 * rowH();
    if (!atEnd && follow.checked && !final) follow.checked = false;
    draw();
  });
  view.addEventListener('keydown', (e) => {
    const keys = { Home: -1e12, End: 1e12, PageDown: view.clientHeight, PageUp: -view.clientHeight };
    if (keys[e.key] !== undefined) { view.scrollTop += keys[e.key]; e.preventDefault(); }
  });

  document.getElementById('log-first-error').addEventListener('click', async () => {
    const r = await fetch(`${api}/logs?level=ERROR&limit=1`, { credentials: 'same-origin' });
    const page = await r.json();
    if (page.lines.length) { follow.checked = false; jump(page.lines[0].line_number); note.textContent = `First error: line ${page.lines[0].line_number}`; }
    else note.textContent = 'No error line (yet).';
  });
  document.getElementById('log-search').addEventListener('submit', async (e) => {
    e.preventDefault();
    const q = document.getElementById('log-q').value;
    if (!q) return;
    const r = await fetch(`${api}/logs?q=${encodeURIComponent(q)}&after=${hit}&limit=1`, { credentials: 'same-origin' });
    const page = await r.json();
    if (page.lines.length) { follow.checked = false; jump(page.lines[0].line_number); note.textContent = `"${q}": line ${page.lines[0].line_number}`; }
    else { note.textContent = hit ? `No more lines hold "${q}".` : `No line holds "${q}".`; hit = 0; draw(); }
  });

  const status = document.getElementById('job-status');
  const setStatus = (s) => {
    const badge = status.querySelector('.badge');
    badge.textContent = s;
    badge.className = `badge st-${s}`;
    badge.dataset.status = s;
    document.getElementById('job').dataset.status = s;
  };
  const refresh = async () => {
    const r = await fetch(api, { credentials: 'same-origin' });
    if (!r.ok) return;
    const j = await r.json();
    setStatus(j.status);
    document.getElementById('job-agent').textContent = j.agent ? j.agent.name : '—';
    document.getElementById('job-exit').textContent = j.exit_code === null ? '—' : String(j.exit_code);
    if (j.started_at) document.getElementById('job-started').textContent = new Date(j.started_at).toLocaleString();
    if (j.completed_at) document.getElementById('job-completed').textContent = new Date(j.completed_at).toLocaleString();
    const pending = document.getElementById('job-pending');
    pending.hidden = !(j.status === 'pending' && j.pending_reason);
    document.getElementById('job-pending-reason').textContent = j.pending_reason || '';
    const err = document.getElementById('job-error');
    err.hidden = !j.error_message;
    err.textContent = j.error_message || '';
    const done = ['success', 'failed', 'cancelled'].includes(j.status);
    if (done) {
      final = true;
      const c = document.getElementById('cancel-form');
      if (c) c.remove();
    }
    return done;
  };

  size();
  if (!final) {
    const timer = setInterval(async () => { if (await refresh()) clearInterval(timer); }, 2000);
    const es = new EventSource(`${api}/logs/stream?after=${total}`);
    es.addEventListener('line', (e) => {
      const l = JSON.parse(e.data);
      const p = Math.floor((l.line_number - 1) / PAGE);
      let lines = pages.get(p);
      if (!(lines instanceof Array)) { lines = []; pages.set(p, lines); }
      lines[(l.line_number - 1) % PAGE] = l;
      if (l.line_number > total) { total = l.line_number; size(); }
      if (follow.checked) view.scrollTop = view.scrollHeight;
      draw();
    });
    es.addEventListener('end', async (e) => {
      es.close();
      const end = JSON.parse(e.data);
      if (end.last_line > total) { total = end.last_line; size(); }
      setStatus(end.status);
      await refresh();
      if (follow.checked) view.scrollTop = view.scrollHeight;
      draw();
    });
    if (follow.checked) view.scrollTop = view.scrollHeight;
  }
  draw();
}

document.addEventListener('DOMContentLoaded', () => {
  live();
  confirms();
  fills();
  launch();
  job();
});
