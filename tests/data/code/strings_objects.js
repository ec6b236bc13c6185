// input: {"s": "  Ünïcödé 😀  "}
// expect: {"trim": "Ünïcödé 😀", "pad": "007", "upper": "ÜNÏCÖDÉ 😀", "chars": 9, "fromEntries": {"a": 1}, "frozen": true, "keys": ["x", "y"], "global": true, "substr": "nï", "cause": "root"}
const trim = input.s.trim();
const err = new Error("outer", { cause: "root" });
return {
  trim,
  pad: "7".padStart(3, "0"),
  upper: trim.toUpperCase(),
  chars: [...trim].length,
  fromEntries: Object.fromEntries([["a", 1]]),
  frozen: Object.isFrozen(Object.freeze({})),
  keys: Object.keys({ x: 1, y: 2 }),
  global: typeof globalThis === "object",
  substr: trim.substr(1, 2),
  cause: err.cause,
};
