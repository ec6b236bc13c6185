// input: {"n": 2}
// expect: "done"
// log-contains: [info] hello 2 {"a":[1,2]}
// log-contains: [warn] careful
// log-contains: [error] Error: bad
// log-contains: [debug] [Function f]
console.log("hello", input.n, { a: [1, 2] });
console.warn("careful");
console.error(new Error("bad"));
console.debug(function f() {});
return "done";
