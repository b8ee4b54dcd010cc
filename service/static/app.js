// The search page: plain JavaScript, no build step, no external requests.
"use strict";

const SHOWN = 24; // results, or newest items, on the page at once

const $ = (id) => document.getElementById(id);
const keyInput = $("api-key");
keyInput.value = localStorage.getItem("clipsearch-key") || "";

async function api(path, options = {}) {
  const headers = options.headers || {};
  if (keyInput.value) headers.Authorization = `Bearer ${keyInput.value}`;
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let message = `${response.status}`;
    try { message = (await response.json()).error.message; } catch (_) { /* not our JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response.status === 204 ? null : response.json();
}

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").className = isError ? "error" : "";
}

async function run(task) {
  try { await task(); } catch (error) { say(error.message, true); }
}

let limits = null; // the server's request limits (GET /v1/limits), read once
async function serverLimits() {
  if (limits === null) limits = await api("/v1/limits");
  return limits;
}

async function refreshStats() {
  const stats = await api("/v1/stats");
  $("model").textContent = stats.model.name;
  $("count").textContent = stats.count;
  // The toy model must never pass for a real one.
  $("demo-banner").hidden = stats.model.name !== "demo";
  $("demo-reason").textContent = stats.model.fallback_reason ? `Why it serves: ${stats.model.fallback_reason}.` : "";
  return stats;
}

// Cards for search hits (with a score) or stored items (without); `message` null leaves the message as it is.
function show(items, message) {
  const grid = $("results");
  grid.replaceChildren();
  for (const item of items) {
    const card = $("card").content.firstElementChild.cloneNode(true);
    card.dataset.id = item.id;
    card.querySelector("img").src = `/v1/images/${encodeURIComponent(item.id)}/thumbnail`;
    card.querySelector("img").alt = item.id;
    card.querySelector(".id").textContent = item.id;
    card.querySelector(".score").textContent = item.score === undefined ? "" : item.score.toFixed(3);
    card.querySelector(".metadata").textContent = JSON.stringify(item.metadata);
    card.querySelector(".more").addEventListener("click", () => similar(item.id));
    grid.append(card);
  }
  if (message !== null) say(message);
}

// Before any search: the items written last, newest first (the list endpoint pages in the order written).
let lastSearch = null; // what the results show: run again when the cut-off changes
async function showNewest(count, { quiet = false } = {}) {
  lastSearch = null;
  const page = await api(`/v1/images?offset=${Math.max(0, count - SHOWN)}&limit=${SHOWN}`);
  const items = page.items.reverse();
  const message = items.length ? `the ${items.length} newest of ${page.total} images` : "no images yet: add some";
  show(items, quiet ? null : message);
}

function minScore() {
  const value = $("min-score").value;
  return value === "" ? null : Number(value);
}

// One search: `fetchHits(k, minScore)` returns the hits, best first; `title` says what was searched for.
async function search(fetchHits, title) {
  lastSearch = { fetchHits, title };
  const cutOff = minScore();
  if (cutOff === null) {
    const hits = await fetchHits(SHOWN, null);
    show(hits, `${hits.length} results ${title}`);
    return;
  }
  // With a cut-off, as many as the server gives, to say how many pass it; the best of them are shown.
  const k = (await serverLimits()).max_k;
  const hits = await fetchHits(k, cutOff);
  const atLeast = hits.length === k ? "at least " : "";
  const shown = hits.length > SHOWN ? `, the best ${SHOWN} shown` : "";
  show(hits.slice(0, SHOWN), `${atLeast}${hits.length} results with score ≥ ${cutOff.toFixed(2)} ${title}${shown}`);
}

function similar(id) {
  return run(() => search(async (k, cutOff) => {
    const query = new URLSearchParams({ k });
    if (cutOff !== null) query.set("min_score", cutOff);
    return (await api(`/v1/images/${encodeURIComponent(id)}/similar?${query}`)).results;
  }, `like ${id}`));
}

$("text-search").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = $("query").value;
  run(() => search(async (k, cutOff) => (await api("/v1/search/text", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ query, k, min_score: cutOff }),
  })).results, `for “${query}”`));
});

function searchByImage(file) {
  return run(() => search(async (k, cutOff) => {
    const form = new FormData();
    form.append("file", file);
    form.append("k", String(k));
    if (cutOff !== null) form.append("min_score", String(cutOff));
    return (await api("/v1/search/image", { method: "POST", body: form })).results;
  }, `like ${file.name}`));
}

$("min-score").addEventListener("change", () => {
  if (lastSearch !== null) run(() => search(lastSearch.fetchHits, lastSearch.title));
});

// The CLI's id rule (clipsearch/bulk.py): the first 32 hex digits of the SHA-256 of the file's bytes, so
// adding a file again, here or with `clipsearch index`, finds it instead of storing it twice.
async function contentId(file) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", await file.arrayBuffer()));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("").slice(0, 32);
}

async function isStored(id) {
  try {
    await api(`/v1/images/${id}`);
    return true;
  } catch (error) {
    if (error.status === 404) return false;
    throw error;
  }
}

// Files go in batches of the server's limit per request, with a progress bar; those already stored are skipped.
function addImages(files) {
  return run(async () => {
    const perRequest = (await serverLimits()).max_files;
    // crypto.subtle exists only in a secure context: localhost, or HTTPS.
    const hashing = Boolean(window.crypto && window.crypto.subtle);
    const bar = $("progress");
    bar.max = files.length;
    bar.value = 0;
    bar.hidden = false;
    const seen = new Set();
    let added = 0;
    let already = 0;
    say(`adding ${files.length} images…`);
    for (let start = 0; start < files.length; start += perRequest) {
      const batch = files.slice(start, start + perRequest);
      let fresh = batch.map((file) => ({ file, id: null }));
      if (hashing) {
        const ids = await Promise.all(batch.map(contentId));
        const stored = await Promise.all(ids.map(isStored));
        fresh = [];
        batch.forEach((file, i) => {
          if (stored[i] || seen.has(ids[i])) {
            already += 1;
          } else {
            seen.add(ids[i]);
            fresh.push({ file, id: ids[i] });
          }
        });
      }
      if (fresh.length) {
        const form = new FormData();
        for (const { file, id } of fresh) {
          form.append("files", file);
          if (id !== null) form.append("ids", id);
        }
        try {
          await api("/v1/images", { method: "POST", body: form });
        } catch (error) {
          throw new Error(`${error.message} (${added} added before that; adding the same files again skips them)`);
        }
        added += fresh.length;
      }
      bar.value = start + batch.length;
      say(`adding images: ${bar.value} of ${files.length}…`);
    }
    let summary = `added ${added} images`;
    if (already) summary += `, ${already} already there`;
    if (!hashing) summary += " (ids are random here: open the page at localhost or over HTTPS to skip files added before)";
    say(summary);
    const stats = await refreshStats();
    await showNewest(stats.count, { quiet: true });
  });
}

for (const [zoneId, inputId, handle] of [
  ["drop", "query-image", (files) => searchByImage(files[0])],
  ["upload", "add-images", addImages],
]) {
  const zone = $(zoneId);
  $(inputId).addEventListener("change", (event) => {
    const files = [...event.target.files];
    event.target.value = ""; // else choosing the same files again is no change, and nothing happens
    if (files.length) handle(files);
  });
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) handle([...event.dataTransfer.files]);
  });
}

function start() {
  return run(async () => {
    const stats = await refreshStats();
    await showNewest(stats.count);
  });
}

keyInput.addEventListener("change", () => {
  localStorage.setItem("clipsearch-key", keyInput.value);
  start();
});

start();
