// input: {"words": ["a", "b", "a", "c", "b", "a"]}
// expect: {"counts": {"a": 3, "b": 2, "c": 1}, "unique": ["a", "b", "c"], "size": 3, "weak": true}
const counts = new Map();
for (const w of input.words) counts.set(w, (counts.get(w) ?? 0) + 1);
const unique = new Set(input.words);
const weak = new WeakMap();
const key = {};
weak.set(key, 1);
return { counts: Object.fromEntries(counts), unique: [...unique], size: unique.size, weak: weak.has(key) };
