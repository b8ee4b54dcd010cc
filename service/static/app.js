// The search page: plain JavaScript, no build step, no external requests.
"use strict";

const $ = (id) => document.getElementById(id);
const keyInput = $("api-key");
keyInput.value = localStorage.getItem("clipsearch-key") || "";
keyInput.addEventListener("change", () => localStorage.setItem("clipsearch-key", keyInput.value));

async function api(path, options = {}) {
  const headers = options.headers || {};
  if (keyInput.value) headers.Authorization = `Bearer ${keyInput.value}`;
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let message = `${response.status}`;
    try { message = (await response.json()).error.message; } catch (_) { /* not our JSON */ }
    throw new Error(message);
  }
  return response.status === 204 ? null : response.json();
}

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").className = isError ? "error" : "";
}

async function refreshStats() {
  try {
    const stats = await api("/v1/stats");
    $("model").textContent = stats.model.name;
    $("count").textContent = stats.count;
  } catch (error) { say(error.message, true); }
}

function show(results, title) {
  const grid = $("results");
  grid.replaceChildren();
  for (const hit of results) {
    const card = $("card").content.firstElementChild.cloneNode(true);
    card.dataset.id = hit.id;
    card.querySelector("img").src = `/v1/images/${encodeURIComponent(hit.id)}/thumbnail`;
    card.querySelector("img").alt = hit.id;
    card.querySelector(".id").textContent = hit.id;
    card.querySelector(".score").textContent = hit.score.toFixed(3);
    card.querySelector(".metadata").textContent = JSON.stringify(hit.metadata);
    card.querySelector(".more").addEventListener("click", () => similar(hit.id));
    grid.append(card);
  }
  say(`${results.length} results ${title}`);
}

async function run(task) {
  try { await task(); } catch (error) { say(error.message, true); }
}

function similar(id) {
  return run(async () => {
    const body = await api(`/v1/images/${encodeURIComponent(id)}/similar?k=24`);
    show(body.results, `like ${id}`);
  });
}

$("text-search").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = $("query").value;
  run(async () => {
    const body = await api("/v1/search/text", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ query, k: 24 }),
    });
    show(body.results, `for “${query}”`);
  });
});

function searchByImage(file) {
  const form = new FormData();
  form.append("file", file);
  form.append("k", "24");
  return run(async () => show((await api("/v1/search/image", { method: "POST", body: form })).results, `like ${file.name}`));
}

function addImages(files) {
  const form = new FormData();
  for (const file of files) form.append("files", file);
  return run(async () => {
    say(`adding ${files.length} images…`);
    const body = await api("/v1/images", { method: "POST", body: form });
    say(`added ${body.items.length} images`);
    await refreshStats();
  });
}

for (const [zoneId, inputId, handle] of [
  ["drop", "query-image", (files) => searchByImage(files[0])],
  ["upload", "add-images", addImages],
]) {
  const zone = $(zoneId);
  $(inputId).addEventListener("change", (event) => event.target.files.length && handle([...event.target.files]));
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) handle([...event.dataTransfer.files]);
  });
}

refreshStats();
