#!/usr/bin/env node
// Emit deterministic facesjs faces as JSON lines: {"index", "face", "svg", "bg", "jersey"}.
//
// Usage: node generate.mjs --seed S --start I --count N [--indices 3,7,9]
//        node generate.mjs --vocab     (prints facesjs feature ids + palettes as JSON)
//
// Face i depends only on (seed, i): Math.random is replaced by a PRNG seeded
// from hash(seed, i) before each face, so any face can be regenerated alone
// (resume, sharding) and the output does not depend on batching.
// The SVG is framed by a fixed FFHQ-style crop (see framedSvg) and has a
// plain background rectangle; it has no width/height (the renderer picks them).

import { readFileSync } from "node:fs";
import { faceToSvgString, generate, svgsIndex } from "facesjs";
// Skin/hair palettes are not exported from the package root; read them from the build.
const { colors } = await import(new URL("./node_modules/facesjs/build/generate.js", import.meta.url));

/** 32-bit mix (murmur3 finaliser). */
function mix32(h) {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** sfc32 PRNG returning floats in [0, 1), seeded from (seed, index, stream). */
export function makeRng(seed, index, stream = 0) {
  let a = mix32(seed ^ 0x9e3779b9);
  let b = mix32(index ^ mix32(seed + 0x632be5ab));
  let c = mix32(stream ^ 0x1b873593 ^ mix32(index + 0x7f4a7c15));
  let d = 1;
  const next = () => {
    a >>>= 0; b >>>= 0; c >>>= 0; d >>>= 0;
    const t = (a + b + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) >>> 0;
    return t / 4294967296;
  };
  for (let i = 0; i < 12; i++) next(); // warm up
  return next;
}

/** HSL (h in [0,360), s,l in [0,1]) -> "#rrggbb". */
function hslToHex(h, s, l) {
  const f = (n) => {
    const k = (n + h / 30) % 12;
    const v = l - s * Math.min(l, 1 - l) * Math.max(-1, Math.min(k - 3, 9 - k, 1));
    return Math.round(v * 255).toString(16).padStart(2, "0");
  };
  return `#${f(0)}${f(8)}${f(4)}`;
}

// FFHQ alignment applied to facesjs' fixed landmarks (400x600 canvas):
// eyes at (140,310) and (260,310), mouth at (200,440).
// side = 2*max(2.0*|eye_to_eye|, 1.8*|eye_to_mouth|), centre = eye_avg + 0.1*eye_to_mouth.
export const CROP = (() => {
  const eyeToEye = 120, eyeToMouth = 130;
  const half = Math.max(2.0 * eyeToEye, 1.8 * eyeToMouth);
  const cx = 200, cy = 310 + 0.1 * eyeToMouth;
  return { x: cx - half, y: cy - half, size: 2 * half };
})();

/** Replace the root <svg ...> attributes with the crop viewBox and add a background rect. */
function framedSvg(svg, bg) {
  const close = svg.indexOf(">");
  if (!svg.startsWith("<svg") || close < 0) throw new Error("unexpected facesjs SVG output");
  const { x, y, size } = CROP;
  const head = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="${x} ${y} ${size} ${size}">`;
  const rect = `<rect x="${x}" y="${y}" width="${size}" height="${size}" fill="${bg}"/>`;
  return head + rect + svg.slice(close + 1);
}

/** Generate face `index` for `seed`: attributes + framed SVG. */
export function makeFace(seed, index) {
  const rng = makeRng(seed, index);
  const saved = Math.random;
  Math.random = rng;
  try {
    const gender = rng() < 0.5 ? "male" : "female";
    // Background: light, low-saturation colour; jersey: any hue.
    const bg = hslToHex(rng() * 360, rng() * 0.25, 0.78 + rng() * 0.14);
    const jersey = [0, 1, 2].map(() => hslToHex(rng() * 360, 0.3 + rng() * 0.6, 0.25 + rng() * 0.5));
    const face = generate({ teamColors: jersey }, { gender });
    face.gender = gender;
    // faceToSvgString mutates face (e.g. hair under hats); record the drawn face.
    const hairHidden = isHairHidden(face, face.hair.id);
    const raw = faceToSvgString(face);
    return { index, face, hairHidden, bg, svg: framedSvg(raw, bg) };
  } finally {
    Math.random = saved;
  }
}

const HATS = ["hat", "hat2", "hat3", "santa-hat"];
const HAIR_UNDER_HAT_OK = [
  "afro", "afro2", "curly", "curly2", "curly3", "faux-hawk", "hair", "high", "juice", "messy-short",
  "messy", "middle-part", "parted", "shaggy1", "shaggy2", "short3", "spike", "spike2", "spike3", "spike4",
  "blowoutFade", "curlyFade1", "curlyFade2", "dreads", "fauxhawk-fade", "tall-fade", "short", "short-fade",
];

/** facesjs skips drawing some hair styles under a hat (display.js drawFeature). */
function isHairHidden(face, originalHairId) {
  return HATS.includes(face.accessories.id) && !HAIR_UNDER_HAT_OK.includes(originalHairId);
}

function parseArgs(argv) {
  const args = { seed: 0, start: 0, count: 0, indices: null, vocab: false };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i];
    const val = argv[i + 1];
    if (key === "--vocab") args.vocab = true;
    else if (key === "--seed") { args.seed = Number(val); i++; }
    else if (key === "--start") { args.start = Number(val); i++; }
    else if (key === "--count") { args.count = Number(val); i++; }
    else if (key === "--indices") { args.indices = val.split(",").filter(Boolean).map(Number); i++; }
    else throw new Error(`unknown argument ${key}`);
  }
  for (const k of ["seed", "start", "count"]) {
    if (!Number.isInteger(args[k]) || args[k] < 0) throw new Error(`--${k} must be a non-negative integer`);
  }
  return args;
}

function facesjsVersion() {
  const url = new URL("./node_modules/facesjs/package.json", import.meta.url);
  return JSON.parse(readFileSync(url, "utf8")).version;
}

function vocab() {
  return { facesjs_version: facesjsVersion(), crop: CROP, svgsIndex, colors };
}

/** Write one line, waiting for the pipe to drain (keeps memory flat). */
function writeLine(line) {
  return new Promise((resolve) => {
    if (process.stdout.write(line + "\n")) resolve();
    else process.stdout.once("drain", resolve);
  });
}

async function main() {
  process.stdout.on("error", (err) => {
    if (err.code === "EPIPE") process.exit(0); // reader closed early (e.g. `| head`)
    throw err;
  });
  const args = parseArgs(process.argv.slice(2));
  if (args.vocab) {
    await writeLine(JSON.stringify(vocab()));
    return;
  }
  const indices = args.indices ?? Array.from({ length: args.count }, (_, k) => args.start + k);
  for (const index of indices) await writeLine(JSON.stringify(makeFace(args.seed, index)));
}

main().catch((err) => {
  process.stderr.write(`generate.mjs: ${err.stack || err}\n`);
  process.exit(1);
});
