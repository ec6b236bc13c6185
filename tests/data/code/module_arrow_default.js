// input: [1, 2, 3]
// expect: 6
export default (xs) => xs.reduce((a, b) => a + b, 0);
