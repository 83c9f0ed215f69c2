// tagger from JavaScript (Node.js 18+ or a browser): fetch with a raw body and with FormData.
//   node examples/client.mjs examples/images/cat.jpg
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

const path = process.argv[2] ?? "examples/images/cat.jpg";
const bytes = await readFile(path);
if (process.argv.includes("--digits")) {
  const answer = await digit(bytes);
  console.log(`digit ${answer.digit} (confidence ${answer.confidence.toFixed(3)})`);
} else {
  const answer = await tags(bytes);
  if (answer.warning) console.warn("warning:", answer.warning);
  for (const tag of answer.tags) console.log(`${tag.confidence.toFixed(3)}  ${tag.label}  (class ${tag.class_id})`);
}
