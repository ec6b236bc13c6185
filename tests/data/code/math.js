// input: {"values": [3, 1, 4, 1, 5]}
// expect: {"sum": 14, "pow": 1024, "hyp": 5, "trunc": -4, "sign": -1, "big": 1000000, "round": 3.14, "cbrt": 3}
const sum = input.values.reduce((a, b) => a + b, 0);
return {
  sum,
  pow: 2 ** 10,
  hyp: Math.hypot(3, 4),
  trunc: Math.trunc(-4.7),
  sign: Math.sign(-3),
  big: 1_000_000,
  round: Math.round(Math.PI * 100) / 100,
  cbrt: Math.cbrt(27),
};
