// hookrelay home page: create a bin, list the bins this browser knows (localStorage
// `hookrelay.bins` = [{id, key, created}]). Text only through textContent; keys stay in
// this browser and travel only in the inspector link's fragment.

const STORE = 'hookrelay.bins';

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = String(v);
    else if (k === 'testid') node.dataset.testid = v;
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else if (['type', 'title', 'aria-label'].includes(k)) node.setAttribute(k, String(v));
    else throw new Error(`el(): attribute ${k} not allowed`);
  }
  for (const c of [].concat(children)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function loadBins() {
  try {
    const v = JSON.parse(localStorage.getItem(STORE) || '[]');
    return Array.isArray(v) ? v.filter((b) => b && typeof b.id === 'string') : [];
  } catch {
    return [];
  }
}

function saveBins(list) {
  localStorage.setItem(STORE, JSON.stringify(list));
}

function inspectorLink(b) {
  const base = `/i/${encodeURIComponent(b.id)}`;
  return b.key ? `${base}#key=${encodeURIComponent(b.key)}` : base;
}

function fmtDate(s) {
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? '' : d.toLocaleString();
}

function render() {
  const list = document.getElementById('bin-list');
  while (list.firstChild) list.removeChild(list.firstChild);
  const bins = loadBins();
  document.getElementById('no-bins').hidden = bins.length > 0;
  for (const b of bins) {
    const link = el('a', { class: 'bin-link mono', text: b.id });
    link.href = inspectorLink(b);
    const remove = el('button', {
      class: 'btn small', type: 'button', text: 'Remove', testid: 'remove-bin',
      title: 'Forget this bin in this browser',
      on: {
        click: () => {
          saveBins(loadBins().filter((x) => x.id !== b.id));
          render();
        },
      },
    });
    list.append(el('li', { class: 'bin-item', testid: 'bin-item' }, [
      link,
      el('span', { class: 'muted small', text: `${window.location.origin}/${b.id}` }),
      el('span', { class: 'muted small bin-created', text: b.created ? `added ${fmtDate(b.created)}` : '' }),
      b.key ? null : el('span', { class: 'badge warn-badge', text: 'no key' }),
      remove,
    ]));
  }
}

async function createBin() {
  const btn = document.getElementById('create-bin');
  const err = document.getElementById('create-error');
  err.textContent = '';
  btn.disabled = true;
  try {
    const res = await fetch('/api/bins', { method: 'POST', credentials: 'omit', cache: 'no-store' });
    let j = null;
    try { j = await res.json(); } catch { /* not JSON */ }
    if (!res.ok) throw new Error((j && (j.message || j.error)) || `HTTP ${res.status}`);
    if (!j || typeof j.id !== 'string' || typeof j.key !== 'string') throw new Error('unexpected answer from the server');
    const bins = loadBins().filter((x) => x.id !== j.id);
    const entry = { id: j.id, key: j.key, created: new Date().toISOString() };
    bins.unshift(entry);
    saveBins(bins);
    window.location.assign(inspectorLink(entry));
  } catch (e) {
    err.textContent = `Could not create a bin: ${e.message}`;
    btn.disabled = false;
  }
}

document.getElementById('create-bin').addEventListener('click', createBin);
window.addEventListener('storage', (e) => { if (e.key === STORE) render(); });
render();
