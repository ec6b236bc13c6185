// input: {"name": "Ada", "n": 3}
// expect: {"plain": "Hello Ada, you have 3 new messages", "tagged": "[Hello ][Ada][!]", "multi": "a\nb"}
const plain = `Hello ${input.name}, you have ${input.n} new message${input.n === 1 ? "" : "s"}`;
const tag = (strings, ...values) => strings.raw.map((s, i) => `[${s}]` + (i < values.length ? `[${values[i]}]` : "")).join("").replace("[]", "");
return { plain, tagged: tag`Hello ${input.name}!`, multi: `a
b` };
