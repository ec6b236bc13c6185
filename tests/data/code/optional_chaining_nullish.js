// input: {"user": {"profile": null, "count": 0, "tags": []}}
// expect: {"city": "unknown", "count": 0, "first": null, "call": null, "assigned": {"a": 1, "b": "x", "c": 0}}
const city = input.user?.profile?.address?.city ?? "unknown";
const count = input.user.count ?? 10;
const first = input.user.tags?.[0] ?? null;
const call = input.user.fn?.() ?? null;
const o = { a: null, b: "x", c: 5 };
o.a ??= 1;
o.b ||= "y";
o.c &&= 0;
return { city, count, first, call, assigned: o };
