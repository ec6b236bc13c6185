// input: {"xs": [1, 2], "ys": [3], "base": {"a": 1, "b": 2}}
// expect: {"all": [0, 1, 2, 3], "merged": {"a": 1, "b": 20, "c": 3}, "max": 3}
const all = [0, ...input.xs, ...input.ys];
const merged = { ...input.base, b: 20, ...{ c: 3 } };
return { all, merged, max: Math.max(...all) };
