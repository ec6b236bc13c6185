// input: {"a": 1, "b": 2}
// expect: 3
const add = (a, b) => a + b;
const curry = (f) => (x) => (y) => f(x, y);
return curry(add)(input.a)(input.b);
