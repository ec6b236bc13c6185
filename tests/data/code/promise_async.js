// input: {"xs": [1, 2, 3]}
// expect: {"doubled": [2, 4, 6], "settled": ["fulfilled", "rejected"], "chained": 11, "first": "fast", "any": 2}
const double = async (x) => { await null; return x * 2; };
const doubled = await Promise.all(input.xs.map(double));
const settled = (await Promise.allSettled([Promise.resolve(1), Promise.reject(new Error("no"))])).map((r) => r.status);
const chained = await Promise.resolve(10).then((x) => x + 1);
const first = await Promise.race([Promise.resolve("fast"), new Promise(() => {})]);
const any = await Promise.any([Promise.reject(1), Promise.resolve(2)]);
return { doubled, settled, chained, first, any };
