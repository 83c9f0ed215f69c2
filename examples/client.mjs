// tagger from JavaScript (Node.js 18+ or a browser): fetch with a raw body and with FormData.
//   node examples/client.mjs examples/images/cat.jpg
//   node examples/client.mjs a.jpg b.jpg c.jpg        (several images in one request)
// TAGGER_URL (default http://127.0.0.1:8080) says where the server is.
import { readFile } from "node:fs/promises";

const base = process.env.TAGGER_URL ?? "http://127.0.0.1:8080";

async function tags(bytes, { topK = 5 } = {}) {
  const response = await fetch(`${base}/v1/tags?top_k=${topK}`, {
    method: "POST",
    headers: { "Content-Type": "application/octet-stream" },
    body: bytes,
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(`${response.status} ${answer.error.code}: ${answer.error.message}`);
  return answer;
}

async function digit(bytes) {
  const form = new FormData();
  form.append("image", new Blob([bytes]), "digit.png"); // multipart/form-data, field `image`
  const response = await fetch(`${base}/v1/digits`, { method: "POST", body: form });
  const answer = await response.json();
  if (!response.ok) throw new Error(`${response.status} ${answer.error.code}: ${answer.error.message}`);
  return answer;
}

// Several images in one request: one `image` part each; the answer is {"results": [...]} in
// order, and a bad image fails only its own entry.
async function tagsBatch(paths) {
  const form = new FormData();
  for (const p of paths) form.append("image", new Blob([await readFile(p)]), p.split("/").pop());
  const response = await fetch(`${base}/v1/tags?top_k=3`, { method: "POST", body: form });
  const answer = await response.json();
  if (!response.ok) throw new Error(`${response.status} ${answer.error.code}: ${answer.error.message}`);
  return answer.results;
}

const paths = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const path = paths[0] ?? "examples/images/cat.jpg";
const bytes = await readFile(path);
if (paths.length > 1) {
  const results = await tagsBatch(paths);
  results.forEach((r, i) => {
    console.log(`== ${paths[i]}`);
    if (r.error) console.log(`error ${r.error.code}: ${r.error.message}`);
    else for (const tag of r.tags) console.log(`${tag.confidence.toFixed(3)}  ${tag.label}  (class ${tag.class_id})`);
  });
} else if (process.argv.includes("--digits")) {
  const answer = await digit(bytes);
  console.log(`digit ${answer.digit} (confidence ${answer.confidence.toFixed(3)})`);
} else {
  const answer = await tags(bytes);
  if (answer.warning) console.warn("warning:", answer.warning);
  for (const tag of answer.tags) console.log(`${tag.confidence.toFixed(3)}  ${tag.label}  (class ${tag.class_id})`);
}
