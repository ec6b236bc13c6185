// expect: {"gen": [1, 2, 3], "custom": ["a", "b"], "entries": [[0, "x"], [1, "y"]], "asyncGen": [10, 20]}
function* count(n) { for (let i = 1; i <= n; i++) yield i; }
const custom = { *[Symbol.iterator]() { yield "a"; yield "b"; } };
async function* agen() { yield 10; yield 20; }
const asyncGen = [];
for await (const v of agen()) asyncGen.push(v);
return { gen: [...count(3)], custom: [...custom], entries: [...["x", "y"].entries()], asyncGen };
