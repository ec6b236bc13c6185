// input: {"n": 5}
// expect: {"factorial": 120, "awaited": true}
const wait = (v) => new Promise((resolve) => resolve(v));
const top = await wait(true);

export default async function main(input) {
  let f = 1;
  for (let i = 2; i <= input.n; i++) f *= await wait(i);
  return { factorial: f, awaited: top };
}
