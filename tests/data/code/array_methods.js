// input: {"items": [{"n": "b", "p": 3}, {"n": "a", "p": 1}, {"n": "c", "p": 2}]}
// expect: {"names": ["a", "c", "b"], "total": 6, "pricey": ["b"], "flat": [1, 2, 3, 4], "last": "c", "at": "c", "found": 2, "includes": true, "every": true, "some": false, "from": [0, 2, 4], "sortedCopy": [1, 2, 3], "entries": [["0", "x"]]}
const sorted = [...input.items].sort((x, y) => x.p - y.p);
return {
  names: sorted.map((i) => i.n),
  total: input.items.reduce((s, i) => s + i.p, 0),
  pricey: input.items.filter((i) => i.p > 2).map(({ n }) => n),
  flat: [[1, [2]], [3], 4].flat(2),
  last: input.items.findLast((i) => i.p >= 2).n,
  at: input.items.at(-1).n,
  found: input.items.findIndex((i) => i.n === "c"),
  includes: [1, 2, NaN].includes(NaN),
  every: input.items.every((i) => i.p > 0),
  some: input.items.some((i) => i.p > 10),
  from: Array.from({ length: 3 }, (_, i) => i * 2),
  sortedCopy: [3, 1, 2].toSorted(),
  entries: Object.entries({ 0: "x" }),
};
