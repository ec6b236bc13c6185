// input: {"name": "world"}
// expect: {"greeting": "hello world", "helper": 42}
const helper = () => 42;

export default function (input) {
  return { greeting: `hello ${input.name}`, helper: helper() };
}
